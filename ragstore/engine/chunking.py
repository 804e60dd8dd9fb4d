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
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from ..errors import InvalidInputError
from ..types import Chunk

__all__ = ["Chunker", "ChunkedDoc", "load_tokenizer", "check_text", "BIG_TEXT"]

# Texts longer than this are tokenized a window at a time: one tokenizer call on
# a whole 50 MB document held every token's offsets at once (6.7 GB) and took
# minutes. Windows are cut at a space between two words, tokenized a few at a
# time in parallel, and neighbours overlap; where they overlap, both must give
# the same tokens (ids and offsets) or the text is tokenized whole as before, so
# a windowed text is chunked exactly as a whole one (tests/test_chunking.py).
BIG_TEXT = 1 << 20  # characters
WINDOW = 1 << 18  # characters per window
OVERLAP = 8192  # characters two neighbouring windows share
SETTLED = OVERLAP // 2  # the end of a window's overlap, where its cut may still change tokens, is not compared
WINDOWS_PER_CALL = 8  # windows tokenized in one parallel call: bounded memory, all cores busy


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
        out = []
        for c in self.chunk_each(texts):
            if isinstance(c, InvalidInputError):
                raise c
            out.append(c)
        return out

    def chunk_each(self, texts: Sequence[str]) -> list[ChunkedDoc | InvalidInputError]:
        """:meth:`chunk_many`, with a document's error in its place instead of raised."""
        small = [i for i, t in enumerate(texts) if len(t) <= BIG_TEXT]
        encs = self.tokenizer.encode_batch([texts[i] for i in small], add_special_tokens=False)
        offsets: dict[int, Any] = {i: [e.offsets] for i, e in zip(small, encs, strict=True)}
        out: list[ChunkedDoc | InvalidInputError] = []
        for i, t in enumerate(texts):
            try:
                if i in offsets:
                    out.append(self._split(t, offsets.pop(i)))
                else:
                    out.append(self._chunk_big(t))
            except InvalidInputError as err:
                out.append(err)
        return out

    def _chunk_big(self, text: str) -> ChunkedDoc:
        try:
            return self._split(text, self._window_offsets(text))
        except _NoWindows:
            # the tokenizer does not cut the same in windows: whole, as before (slow, exact)
            return self._split(text, [self.tokenizer.encode(text, add_special_tokens=False).offsets])

    def _window_offsets(self, text: str) -> Iterator[list[tuple[int, int]]]:
        """The whole text's token offsets, a window at a time (see BIG_TEXT); _NoWindows if they disagree."""
        n = len(text)
        cuts = [0]
        while cuts[-1] + WINDOW + OVERLAP < n:
            cuts.append(_cut_near(text, cuts[-1] + WINDOW))
        spans = [(a, min(n, b + OVERLAP)) for a, b in zip(cuts, cuts[1:] + [n], strict=True)]
        expect: list[tuple[int, tuple[int, int]]] | None = None  # the previous window's tokens past its cut
        for g in range(0, len(spans), WINDOWS_PER_CALL):
            group = spans[g : g + WINDOWS_PER_CALL]
            encs = self.tokenizer.encode_batch([text[a:b] for a, b in group], add_special_tokens=False)
            for (a, b), e in zip(group, encs, strict=True):
                offs = [(x + a, y + a) for x, y in e.offsets]
                ids = e.ids
                if expect is not None:
                    # the tokens both windows hold must be the same: then this one starts in step
                    if not expect or [(i, o) for i, o in zip(ids[: len(expect)], offs, strict=False)] != expect:
                        raise _NoWindows
                if b == n:
                    yield offs
                    return
                cut = b - OVERLAP
                k = next((j for j, (x, _) in enumerate(offs) if x >= cut), len(offs))
                if k and offs[k - 1][1] > cut:
                    raise _NoWindows  # a token spans the cut
                settled = b - SETTLED
                expect = [(ids[j], offs[j]) for j in range(k, len(offs)) if offs[j][1] <= settled]
                yield offs[:k]

    def token_count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _split(self, text: str, parts: Iterable[list[tuple[int, int]]]) -> ChunkedDoc:
        """Chunks of ``chunk_tokens`` tokens from the text's token offsets, given in consecutive parts."""
        ct = self.chunk_tokens
        chunks: list[Chunk] = []
        pres: list[str] = []
        prev_end = 0

        def emit(window: list[tuple[int, int]]) -> None:
            nonlocal prev_end
            start = window[0][0]
            # offsets are monotone for real tokenizers, but max() guards odd pre-tokenizers
            end = max(e for _, e in window)
            start = max(start, prev_end)
            end = max(end, start)
            chunks.append(Chunk(position=len(chunks), text=text[start:end], start=start, end=end,
                                n_tokens=len(window)))
            pres.append(text[prev_end:start])
            prev_end = end

        carry: list[tuple[int, int]] = []  # tokens of the part before, short of a whole chunk
        for part in parts:
            if carry:
                part = carry + part
            full = len(part) - len(part) % ct
            for i in range(0, full, ct):
                emit(part[i : i + ct])
            carry = part[full:]
        if carry:
            emit(carry)
        if not chunks:
            raise InvalidInputError(
                "text produced no tokens with this tokenizer (only control or unknown characters?)"
            )
        return ChunkedDoc(chunks=chunks, pres=pres, tail=text[prev_end:])


class _NoWindows(Exception):
    """The tokenizer gives other tokens for a window than for the whole text: tokenize it whole."""


def _cut_near(text: str, at: int) -> int:
    """A place to start a window at or after ``at``: a space between two words (where
    tokenizers split), else any whitespace, else after punctuation, else ``at`` (the
    windows' overlap tells whether the tokenizer agrees in any case)."""
    limit = min(len(text) - 1, at + OVERLAP)
    i = at
    while True:
        i = text.find(" ", i, limit)
        if i < 0:
            break
        if i > 0 and not text[i - 1].isspace() and not text[i + 1].isspace():
            return i
        i += 1
    for j in range(at, limit):
        if text[j].isspace():
            return j
    # no whitespace (CJK prose, say): after punctuation, before a letter or digit, where
    # tokenizers that split on punctuation start a new word
    for j in range(max(at, 1), limit):
        if text[j].isalnum() and unicodedata.category(text[j - 1]).startswith("P"):
            return j
    return at
