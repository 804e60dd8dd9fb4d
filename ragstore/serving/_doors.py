"""What the framework doors (LangChain, Haystack, LlamaIndex) share.

Each framework hands ragstore units that a text splitter already cut, so a
store created by a door keeps each one as exactly one chunk: a very large
``chunk_tokens`` and a tokenizer built in code that needs no model file.
"""

from __future__ import annotations

__all__ = ["DOCUMENT_CHUNK_TOKENS", "EMPTY_TEXT", "whitespace_tokenizer"]

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
