"""Fixed-size token chunking with exact character offsets.

A chunk is ``chunk_tokens`` consecutive tokens (RETRO: 64); its text is the
exact substring of the document between its first token's start and its last
token's end, never a detokenized string. What lies between two chunks (the
whitespace a tokenizer skips) is kept as the next chunk's ``pre`` so the
document can be rebuilt byte for byte.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from ..errors import InvalidInputError
from ..types import Chunk

__all__ = ["Chunker", "ChunkedDoc", "load_tokenizer", "check_text"]


def load_tokenizer(spec: str | Tokenizer) -> tuple[Tokenizer, str]:
    """Return (tokenizer, its JSON) from a Tokenizer, a tokenizer.json path or its JSON text."""
    if isinstance(spec, Tokenizer):
        return spec, spec.to_str()
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise InvalidInputError(
            f"tokenizer must be a tokenizers.Tokenizer, a path to tokenizer.json or its JSON text, "
            f"got {type(spec).__name__}"
        )
    text = spec
    if not spec.lstrip().startswith("{"):
        try:
            with open(spec, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise InvalidInputError(f"cannot read tokenizer file {spec!r}: {e.strerror}") from None
    try:
        return Tokenizer.from_str(text), text
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise InvalidInputError(f"not a valid tokenizer.json ({spec[:80]!r}): {e}") from None


def check_text(text: object, what: str = "text") -> str:
    """Validate document text: a non-blank str (or UTF-8 bytes) without lone surrogates."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInputError(
                f"{what} is not valid UTF-8 (byte {e.start}): decode it or fix the file's encoding"
            ) from None
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError(f"{what} is empty or only whitespace: there is nothing to chunk")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what} holds an unpaired surrogate at character {e.start}: it is not valid Unicode text"
        ) from None
    return text


@dataclass(frozen=True)
class ChunkedDoc:
    chunks: list[Chunk]
    pres: list[str]  # text between the previous chunk (or the start) and this one
    tail: str  # text after the last chunk

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks)


class Chunker:
    """Splits text into fixed windows of ``chunk_tokens`` tokens."""

    def __init__(self, tokenizer: str | Tokenizer, chunk_tokens: int = 64) -> None:
        if not isinstance(chunk_tokens, int) or isinstance(chunk_tokens, bool) or chunk_tokens < 1:
            raise InvalidInputError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")
        tok, self.tokenizer_json = load_tokenizer(tokenizer)
        # A fresh copy: truncation or padding set in tokenizer.json would cut documents.
        self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.chunk_tokens = chunk_tokens
        self.tokenizer_hash = hashlib.sha256(self.tokenizer_json.encode()).hexdigest()[:16]

    def chunk(self, text: str) -> ChunkedDoc:
        return self.chunk_many([text])[0]

    def chunk_many(self, texts: Sequence[str]) -> list[ChunkedDoc]:
        """Chunk several documents; the tokenizer runs them in parallel."""
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [self._split(t, e.offsets) for t, e in zip(texts, encs, strict=True)]

    def chunk_each(self, texts: Sequence[str]) -> list[ChunkedDoc | InvalidInputError]:
        """:meth:`chunk_many`, with a document's error in its place instead of raised."""
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        out: list[ChunkedDoc | InvalidInputError] = []
        for t, e in zip(texts, encs, strict=True):
            try:
                out.append(self._split(t, e.offsets))
            except InvalidInputError as err:
                out.append(err)
        return out

    def token_count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _split(self, text: str, offsets: list[tuple[int, int]]) -> ChunkedDoc:
        if not offsets:
            raise InvalidInputError(
                "text produced no tokens with this tokenizer (only control or unknown characters?)"
            )
        ct = self.chunk_tokens
        chunks: list[Chunk] = []
        pres: list[str] = []
        prev_end = 0
        for pos, i in enumerate(range(0, len(offsets), ct)):
            window = offsets[i : i + ct]
            start = window[0][0]
            # offsets are monotone for real tokenizers, but max() guards odd pre-tokenizers
            end = max(e for _, e in window)
            start = max(start, prev_end)
            end = max(end, start)
            chunks.append(Chunk(position=pos, text=text[start:end], start=start, end=end, n_tokens=len(window)))
            pres.append(text[prev_end:start])
            prev_end = end
        return ChunkedDoc(chunks=chunks, pres=pres, tail=text[prev_end:])
