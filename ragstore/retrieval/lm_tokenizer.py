"""An LM's tokenizer as the RETRO layer uses it: exact counts, splits and decodes.

:class:`LMTokenizer` wraps a ``tokenizers.Tokenizer`` with truncation and
padding off; :func:`as_tokenizer` builds one from whatever a caller passes (a
tokenizer.json path, its text, a ``Tokenizer``, a store's chunker). Retrieval
(:mod:`.retro`), leakage (:mod:`.leakage`), prefetching (:mod:`.prefetch`) and
prompts (:mod:`.prompting`) share it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..engine.chunking import load_tokenizer
from ..errors import InvalidInputError

__all__ = ["LMTokenizer", "as_tokenizer"]


# --------------------------------------------------------------------------- tokenizers
class LMTokenizer:
    """A ``tokenizers.Tokenizer`` with truncation and padding switched off.

    Counts, splits and decodes exactly (a tokenizer.json that pads or truncates
    to 128 tokens, as many do, would silently cut texts otherwise). Build one
    with :func:`as_tokenizer` from a path, JSON text, a ``Tokenizer`` or an
    ``LMTokenizer``.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        if tokenizer.truncation is not None or tokenizer.padding is not None:
            pad = tokenizer.padding
            tokenizer = Tokenizer.from_str(tokenizer.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._config_pad = pad.get("pad_id") if pad else None
        else:
            self._config_pad = None
        self.tokenizer = tokenizer

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def encode_offsets(self, text: str, add_special_tokens: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
        e = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return e.ids, e.offsets

    def count(self, text: str, add_special_tokens: bool = False) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def default_pad_id(self) -> int | None:
        """The pad id the tokenizer.json configures, else a conventional pad token's id."""
        if self._config_pad is not None:
            return int(self._config_pad)
        for tok in ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>", "</s>"):
            i = self.tokenizer.token_to_id(tok)
            if i is not None:
                return int(i)
        return None


@functools.lru_cache(maxsize=16)
def _tokenizer_from_str(spec: str) -> LMTokenizer:
    tok, _ = load_tokenizer(spec)
    return LMTokenizer(tok)


def as_tokenizer(spec: Any) -> LMTokenizer:
    """An :class:`LMTokenizer` from a tokenizer.json path, its JSON text or a ``Tokenizer``."""
    if isinstance(spec, LMTokenizer):
        return spec
    if isinstance(spec, Tokenizer):
        return LMTokenizer(spec)
    if hasattr(spec, "tokenizer") and isinstance(spec.tokenizer, Tokenizer):
        return LMTokenizer(spec.tokenizer)  # a ragstore Chunker
    if isinstance(spec, str):
        return _tokenizer_from_str(spec)
    raise InvalidInputError(
        "tokenizer must be a tokenizer.json path, its JSON text, a tokenizers.Tokenizer or an LMTokenizer; "
        f"got {type(spec).__name__}"
    )


def _store_tokenizer(store: Any) -> LMTokenizer:
    return LMTokenizer(store.chunker.tokenizer)  # the chunker's copy already has no truncation


def _is_token_ids(seq: Any) -> bool:
    if isinstance(seq, np.ndarray):
        return seq.dtype.kind in "iu"
    if isinstance(seq, (list, tuple)) and seq:
        return all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in seq)
    return False

