"""What the framework doors (LangChain, Haystack, LlamaIndex) share.

Each framework hands ragstore units that a text splitter already cut, so a
store created by a door keeps each one as exactly one chunk: a very large
``chunk_tokens`` and a tokenizer built in code that needs no model file.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DOCUMENT_CHUNK_TOKENS", "EMPTY_TEXT", "whitespace_tokenizer", "new_store_layout"]

# one chunk per framework document, however long (the frameworks split before they write)
DOCUMENT_CHUNK_TOKENS = 1 << 20
# ragstore refuses blank text; the frameworks allow it: such documents are stored as this
EMPTY_TEXT = "(empty)"


def whitespace_tokenizer() -> str:
    """tokenizer.json of a tokenizer whose tokens are whitespace-separated words.

    Needs no model file; with one chunk per document it only has to find where
    the text starts and ends."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str()


def new_store_layout(embedder: Any, tokenizer: Any, chunk_tokens: int | None) -> tuple[Any, Any, int | None]:
    """(embedder, tokenizer, chunk_tokens) for a store a door creates.

    One chunk per framework document, unless the embedder reads a bounded number
    of tokens (``max_seq_length``, e.g. MiniLM's 256): a longer chunk would be
    embedded by its start only, so the store's own chunking (the embedder's
    tokenizer and its chunk size) cuts long documents instead. The embedder is
    resolved once here and handed to the store."""
    from ..embedders import DEFAULT_EMBEDDER, resolve

    emb = resolve(embedder if embedder is not None else DEFAULT_EMBEDDER)
    if isinstance(getattr(emb, "max_seq_length", None), int):
        return emb, tokenizer, chunk_tokens  # the store's defaults for what is not given
    if tokenizer is None and (chunk_tokens is None or emb.tokenizer_json() is None):
        tokenizer = whitespace_tokenizer()
    return emb, tokenizer, chunk_tokens if chunk_tokens is not None else DOCUMENT_CHUNK_TOKENS
