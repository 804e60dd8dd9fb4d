"""Retrieval as RETRO uses it: per-chunk neighbours of a sequence.

RETRO (Borgeaud et al., 2022) splits an input sequence into chunks of ``m``
tokens (64) and retrieves, for every chunk ``C_u``, its ``k`` nearest
neighbours from the datastore, each with the chunk that follows it in its
document (the *continuation*): the ``[N, F]`` pairs. This module provides:

- :func:`retrieve_sequence`: the neighbours of every chunk of a text or of a
  list of LM token ids, batched through ``Store.query_many``; optional
  same-document exclusion (training), a leakage filter (``max_overlap=``) and
  the causal shift (``shift=True``).
- :meth:`SequenceNeighbours.to_arrays` / :func:`neighbour_arrays`: numpy
  ``[n_chunks, k, 2 * chunk_tokens]`` token ids and masks in an LM's
  tokenizer, the layout RETRO-style training code consumes.
- :func:`longest_common_run`, :func:`leakage`, :func:`leakage_report`:
  RETRO's leakage analysis (longest common token substring between a chunk and
  its neighbours, as a fraction of the chunk).
- :class:`Prefetcher`: start the search for chunk ``u`` while the LM generates,
  with an optional *stale* mode that serves chunk ``u-1``'s neighbours when
  ``u``'s are not ready.

Causality: the neighbours of chunk ``u`` are retrieved *with* chunk ``u``'s
tokens, so they may only inform the tokens that come after chunk ``u``: the
tokens of chunk ``u+1`` onwards (RETRO attends ``E_u`` from the last token
of ``C_u`` up to the second to last token of ``C_{u+1}``). ``shift=True`` lays
them out that way: position ``u`` holds chunk ``u-1``'s neighbours and the
first position holds none.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..engine.chunking import check_text, load_tokenizer
from ..errors import InvalidInputError
from ..types import Hit

__all__ = [
    "LMTokenizer",
    "as_tokenizer",
    "QueryChunk",
    "SequenceNeighbours",
    "NeighbourArrays",
    "split_sequence",
    "retrieve_sequence",
    "retrieve_document",
    "neighbour_arrays",
    "longest_common_run",
    "leakage",
    "LeakageReport",
    "leakage_report",
    "PrefetchResult",
    "Prefetcher",
]


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


# --------------------------------------------------------------------------- splitting
@dataclass(frozen=True)
class QueryChunk:
    """One chunk of the input sequence.

    ``start``/``end``: character offsets of ``text`` in the input text (for
    token-id input: in the decoded text of all ids). ``token_start``/
    ``token_end``: its token range in the input (in the splitting tokenizer).
    """

    index: int
    text: str
    start: int
    end: int
    token_start: int
    token_end: int

    @property
    def n_tokens(self) -> int:
        return self.token_end - self.token_start


def _is_token_ids(seq: Any) -> bool:
    if isinstance(seq, np.ndarray):
        return seq.dtype.kind in "iu"
    if isinstance(seq, (list, tuple)) and seq:
        return all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in seq)
    return False


def split_sequence(
    store: Any, text_or_token_ids: Any, *, chunk_tokens: int | None = None, tokenizer: Any = None
) -> list[QueryChunk]:
    """Split a text or a list of token ids into chunks of ``chunk_tokens`` tokens.

    Text is tokenized with ``tokenizer`` (default: the store's) and cut at
    exact character offsets like the store's own chunker. Token ids are cut
    into windows of ``chunk_tokens`` ids and each window decoded with
    ``tokenizer`` (default: the store's) to make its query text.
    """
    ct = store.config.chunk_tokens if chunk_tokens is None else chunk_tokens
    if not isinstance(ct, int) or isinstance(ct, bool) or ct < 1:
        raise InvalidInputError(f"chunk_tokens must be a positive integer, got {ct!r}")
    tok = _store_tokenizer(store) if tokenizer is None else as_tokenizer(tokenizer)
    if _is_token_ids(text_or_token_ids):
        ids = [int(i) for i in np.asarray(text_or_token_ids).reshape(-1)]
        return _split_ids(ids, ct, tok)
    if isinstance(text_or_token_ids, np.ndarray) or (
        isinstance(text_or_token_ids, (list, tuple)) and not text_or_token_ids
    ):
        raise InvalidInputError("token ids must be a non-empty 1-D sequence of integers")
    text = check_text(text_or_token_ids, "sequence text")
    _, offsets = tok.encode_offsets(text)
    if not offsets:
        raise InvalidInputError("sequence text produced no tokens with this tokenizer")
    out: list[QueryChunk] = []
    prev_end = 0
    for u, i in enumerate(range(0, len(offsets), ct)):
        window = offsets[i : i + ct]
        start = max(window[0][0], prev_end)
        end = max(max(e for _, e in window), start)
        out.append(QueryChunk(u, text[start:end], start, end, i, i + len(window)))
        prev_end = end
    return out


def _split_ids(ids: list[int], ct: int, tok: LMTokenizer, context: int = 16) -> list[QueryChunk]:
    if not ids:
        raise InvalidInputError("token ids must be a non-empty 1-D sequence of integers")
    out: list[QueryChunk] = []
    pos = 0  # offset of the window's text in the decoded text of all ids
    for u, i in enumerate(range(0, len(ids), ct)):
        j = min(i + ct, len(ids))
        # Decode with a few tokens of left context and remove the context's text, so
        # that word pieces split across a boundary ("##ly", half a UTF-8 character
        # in byte-level BPE) decode as they do in the whole text.
        c0 = max(0, i - context)
        head = tok.decode(ids[c0:i]) if c0 < i else ""
        both = tok.decode(ids[c0:j])
        piece = both[len(head) :] if both.startswith(head) else tok.decode(ids[i:j])
        lead = len(piece) - len(piece.lstrip())
        body = piece.strip()
        out.append(QueryChunk(u, body, pos + lead, pos + lead + len(body), i, j))
        pos += len(piece)
    return out


# --------------------------------------------------------------------------- leakage
def longest_common_run(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common contiguous run of tokens of ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if len(a) == 0 or len(b) == 0:
        return 0
    if len(a) > len(b):
        a, b = b, a
    prev = np.zeros(len(b) + 1, dtype=np.int32)
    cur = np.zeros_like(prev)
    best = 0
    for x in a.tolist():
        eq = b == x
        cur[0] = 0
        np.multiply(prev[:-1] + 1, eq, out=cur[1:])
        m = int(cur.max())
        if m > best:
            best = m
        prev, cur = cur, prev
    return best


def leakage(chunk_ids: Sequence[int], neighbour_ids: Sequence[int]) -> float:
    """RETRO's leakage of a neighbour: longest common token run / chunk length (0..1)."""
    n = len(chunk_ids)
    if n == 0:
        return 0.0
    return min(1.0, longest_common_run(chunk_ids, neighbour_ids) / n)


def _neighbour_text(hit: Hit, with_continuation: bool) -> str:
    if with_continuation and hit.continuation:
        return hit.text + " " + hit.continuation
    return hit.text


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class NeighbourArrays:
    """Token ids of every chunk's neighbours in an LM's tokenizer.

    ``tokens[u, j]`` holds neighbour ``j`` of chunk ``u``: its first
    ``chunk_tokens`` slots are the neighbour chunk N, the next ``chunk_tokens``
    its continuation F; each half is left-aligned and padded with ``pad_id``.
    ``mask`` is True on real tokens. A continuation is padding when the
    neighbour ends its document, and a missing neighbour is all padding.
    """

    tokens: np.ndarray  # int32 [n_chunks, k, 2 * chunk_tokens]
    mask: np.ndarray  # bool, same shape
    chunk_tokens: int
    pad_id: int

    @property
    def neighbours(self) -> np.ndarray:
        """The N halves: [n_chunks, k, chunk_tokens]."""
        return self.tokens[..., : self.chunk_tokens]

    @property
    def continuations(self) -> np.ndarray:
        """The F halves: [n_chunks, k, chunk_tokens]."""
        return self.tokens[..., self.chunk_tokens :]


@dataclass(frozen=True)
class SequenceNeighbours:
    """The neighbours of every chunk of a sequence.

    ``neighbours[u]`` is a list of up to ``k`` :class:`~ragstore.Hit` (each
    with its ``continuation``: the ``[N, F]`` pair), best first.
    ``retrieved_with[u]`` is the index of the input chunk whose text found
    ``neighbours[u]``: ``u`` normally, ``u - 1`` when ``shifted`` (and None for
    the first position, which then has no neighbours). ``overlaps[u][j]`` is
    the leakage of ``neighbours[u][j]`` against the chunk that retrieved it
    (computed when ``max_overlap`` was given or ``with_overlap=True``).
    """

    chunks: list[QueryChunk]
    neighbours: list[list[Hit]]
    k: int
    shifted: bool
    retrieved_with: list[int | None]
    chunk_tokens: int = 64
    overlaps: list[list[float]] | None = None
    tokenizer: LMTokenizer | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.chunks)

    def pairs(self, u: int) -> list[tuple[str, str | None]]:
        """RETRO's ``[N, F]`` pairs of position ``u``: (neighbour, continuation) texts."""
        return [(h.text, h.continuation) for h in self.neighbours[u]]

    def to_arrays(
        self, tokenizer: Any = None, *, chunk_tokens: int | None = None, pad_id: int | None = None
    ) -> NeighbourArrays:
        """LM-ready arrays; see :func:`neighbour_arrays`."""
        tok = tokenizer if tokenizer is not None else self.tokenizer
        if tok is None:
            raise InvalidInputError("pass the LM's tokenizer (a tokenizer.json path or a Tokenizer)")
        if chunk_tokens is None:
            chunk_tokens = self.chunk_tokens
        return neighbour_arrays(self.neighbours, tok, chunk_tokens=chunk_tokens, k=self.k, pad_id=pad_id)


def neighbour_arrays(
    neighbours: Sequence[Sequence[Hit]],
    tokenizer: Any,
    *,
    chunk_tokens: int,
    k: int | None = None,
    pad_id: int | None = None,
) -> NeighbourArrays:
    """Token ids ``[n_chunks, k, 2 * chunk_tokens]`` (N then F) with a boolean mask.

    Each neighbour chunk and its continuation are encoded separately with the
    LM's ``tokenizer`` (no special tokens), cut to ``chunk_tokens`` ids and
    padded with ``pad_id`` (default: the tokenizer's pad token). A
    continuation of None (the neighbour ends its document) is all padding:
    it never runs into the next document.
    """
    tok = as_tokenizer(tokenizer)
    if not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise InvalidInputError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")
    if k is None:
        k = max((len(n) for n in neighbours), default=0)
    if pad_id is None:
        pad_id = tok.default_pad_id()
        if pad_id is None:
            raise InvalidInputError("this tokenizer has no pad token: pass pad_id= (the mask marks padding anyway)")
    n = len(neighbours)
    ct = chunk_tokens
    tokens = np.full((n, k, 2 * ct), pad_id, dtype=np.int32)
    mask = np.zeros((n, k, 2 * ct), dtype=bool)
    texts: list[str] = []
    slots: list[tuple[int, int, int]] = []
    for u, hits in enumerate(neighbours):
        for j, h in enumerate(list(hits)[:k]):
            texts.append(h.text)
            slots.append((u, j, 0))
            if h.continuation:
                texts.append(h.continuation)
                slots.append((u, j, ct))
    if texts:
        for (u, j, off), ids in zip(slots, tok.encode_batch(texts)):
            ids = ids[:ct]
            tokens[u, j, off : off + len(ids)] = ids
            mask[u, j, off : off + len(ids)] = True
    return NeighbourArrays(tokens=tokens, mask=mask, chunk_tokens=ct, pad_id=int(pad_id))


# --------------------------------------------------------------------------- retrieval
def _query_neighbours(
    store: Any,
    chunks: list[QueryChunk],
    k: int,
    *,
    exclude_docs: Iterable[str] | None,
    max_overlap: float | None,
    with_overlap: bool,
    overlap_continuation: bool,
    tok: LMTokenizer,
    query_kwargs: dict,
) -> tuple[list[list[Hit]], list[list[float]] | None]:
    texts = [c.text for c in chunks]
    live = [i for i, t in enumerate(texts) if t.strip()]  # a window of special tokens only has no text
    out: list[list[Hit]] = [[] for _ in chunks]
    ovl: list[list[float]] = [[] for _ in chunks]
    need_overlap = with_overlap or max_overlap is not None
    chunk_ids = tok.encode_batch(texts) if need_overlap else None
    excluded = list(exclude_docs) if exclude_docs else None
    fetch = k if max_overlap is None else 2 * k
    max_fetch = max(fetch, 256 * k)

    def _scores(i: int, hits: list[Hit]) -> list[float]:
        if not need_overlap or not hits:
            return [0.0] * len(hits)
        nb_ids = tok.encode_batch([_neighbour_text(h, overlap_continuation) for h in hits])
        return [leakage(chunk_ids[i], ids) for ids in nb_ids]

    todo = live
    while todo:
        results = store.query_many([texts[i] for i in todo], fetch, exclude_docs=excluded, **query_kwargs)
        again = []
        for i, hits in zip(todo, results):
            scores = _scores(i, hits)
            kept = [(h, s) for h, s in zip(hits, scores) if max_overlap is None or s <= max_overlap]
            if len(kept) < k and len(hits) == fetch and fetch < max_fetch:
                again.append(i)  # filtered below k while more candidates exist: look deeper
                continue
            out[i] = [h for h, _ in kept[:k]]
            ovl[i] = [s for _, s in kept[:k]]
        fetch = min(fetch * 4, max_fetch)
        todo = again
    return out, (ovl if need_overlap else None)


def retrieve_sequence(
    store: Any,
    text_or_token_ids: Any,
    *,
    k: int = 2,
    chunk_tokens: int | None = None,
    exclude_docs: Iterable[str] | None = None,
    tokenizer: Any = None,
    shift: bool = False,
    max_overlap: float | None = None,
    with_overlap: bool = False,
    overlap_continuation: bool = True,
    **query_kwargs: Any,
) -> SequenceNeighbours:
    """The ``k`` neighbours (with continuations) of every chunk of a sequence.

    - ``text_or_token_ids``: a text, or a 1-D list/array of token ids of
      ``tokenizer`` (decoded to query text chunk by chunk).
    - ``chunk_tokens``: chunk length (default: the store's ``chunk_tokens``).
    - ``tokenizer``: the tokenizer that defines chunks (an LM's tokenizer.json
      path or ``Tokenizer``); default: the store's own, so text input is cut
      exactly as the store cut its documents.
    - ``exclude_docs``: documents whose chunks are never neighbours (RETRO
      excludes the training sequence's own document); ``k`` is kept, the
      search widens as needed.
    - ``shift``: lay neighbours out causally (position ``u`` gets chunk
      ``u-1``'s neighbours; the first gets none).
    - ``max_overlap``: drop neighbours whose leakage (:func:`leakage` against
      the query chunk, over neighbour + continuation when
      ``overlap_continuation``) exceeds this fraction, searching deeper to
      still return ``k``.
    - other keyword arguments (``sources=``, ``rerank=``, ``exact=``,
      ``expansion=`` ...) go to ``store.query_many``.

    All chunks are searched in one batched ``query_many`` call.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if max_overlap is not None and not 0.0 <= float(max_overlap) <= 1.0:
        raise InvalidInputError(f"max_overlap must be a fraction in [0, 1], got {max_overlap!r}")
    if "exclude_self" in query_kwargs:
        raise InvalidInputError("use exclude_docs=[doc_id] (or retrieve_document) to exclude a document")
    tok = _store_tokenizer(store) if tokenizer is None else as_tokenizer(tokenizer)
    chunks = split_sequence(store, text_or_token_ids, chunk_tokens=chunk_tokens, tokenizer=tok)
    neighbours, overlaps = _query_neighbours(
        store,
        chunks,
        k,
        exclude_docs=exclude_docs,
        max_overlap=max_overlap,
        with_overlap=with_overlap,
        overlap_continuation=overlap_continuation,
        tok=tok,
        query_kwargs=query_kwargs,
    )
    retrieved_with: list[int | None] = list(range(len(chunks)))
    if shift:
        neighbours = [[]] + neighbours[:-1]
        if overlaps is not None:
            overlaps = [[]] + overlaps[:-1]
        retrieved_with = [None] + retrieved_with[:-1]
    return SequenceNeighbours(
        chunks=chunks,
        neighbours=neighbours,
        k=k,
        shifted=shift,
        retrieved_with=retrieved_with,
        chunk_tokens=store.config.chunk_tokens if chunk_tokens is None else chunk_tokens,
        overlaps=overlaps,
        tokenizer=tok,
    )


def retrieve_document(store: Any, doc_id: str, *, k: int = 2, exclude_self: bool = True, **kwargs: Any) -> SequenceNeighbours:
    """:func:`retrieve_sequence` over a stored document, excluding the document itself.

    This is how RETRO prepares training data: the neighbours of a training
    sequence never come from its own document.
    """
    doc = store.get(doc_id)
    excl = set(kwargs.pop("exclude_docs", None) or ())
    if exclude_self:
        excl.add(doc_id)
    return retrieve_sequence(store, doc.text, k=k, exclude_docs=excl or None, **kwargs)


# --------------------------------------------------------------------------- leakage report
@dataclass(frozen=True)
class LeakageReport:
    """Distribution of neighbour leakage over a set of query chunks.

    ``pair_values``: leakage of each (query chunk, neighbour) pair;
    ``chunk_values``: per query chunk, the maximum over its neighbours
    (RETRO's filter criterion). ``histogram`` counts ``chunk_values`` in
    ``bin_edges``; ``quantiles`` and ``run_tokens_quantiles`` (the longest
    common run in tokens) are over ``chunk_values``.
    """

    n_chunks: int
    n_pairs: int
    mean: float
    quantiles: dict[float, float]
    run_tokens_quantiles: dict[float, float]
    bin_edges: list[float]
    histogram: list[int]
    pair_values: np.ndarray = field(repr=False)
    chunk_values: np.ndarray = field(repr=False)
    chunk_runs: np.ndarray = field(repr=False)

    def fraction_above(self, threshold: float) -> float:
        """Share of query chunks whose most-leaking neighbour exceeds ``threshold``."""
        if self.n_chunks == 0:
            return 0.0
        return float((self.chunk_values > threshold).mean())

    def summary(self) -> str:
        q = ", ".join(f"p{int(p * 100)}={v:.3f}" for p, v in self.quantiles.items())
        t = ", ".join(f"p{int(p * 100)}={v:.0f}" for p, v in self.run_tokens_quantiles.items())
        lines = [
            f"{self.n_chunks} query chunks, {self.n_pairs} neighbour pairs; mean max-leakage {self.mean:.3f}",
            f"quantiles of max-leakage per chunk: {q}",
            f"longest common run in tokens: {t}",
            "histogram (max-leakage per chunk):",
        ]
        total = max(1, sum(self.histogram))
        for lo, hi, c in zip(self.bin_edges[:-1], self.bin_edges[1:], self.histogram):
            lines.append(f"  [{lo:.1f}, {hi:.1f}{']' if hi >= 1.0 else ')'} {c:6d} {'#' * round(40 * c / total)}")
        return "\n".join(lines)

    __str__ = summary


def leakage_report(
    store: Any,
    sequences: Sequence[Any],
    *,
    k: int = 2,
    bins: int = 10,
    quantiles: Sequence[float] = (0.5, 0.9, 0.99, 1.0),
    tokenizer: Any = None,
    overlap_continuation: bool = True,
    **kwargs: Any,
) -> LeakageReport:
    """Leakage distribution of the neighbours of every chunk of ``sequences``.

    ``sequences``: texts or token-id lists (each split and searched with
    :func:`retrieve_sequence`, ``kwargs`` passed on), or already computed
    :class:`SequenceNeighbours`.
    """
    pair_vals: list[float] = []
    chunk_vals: list[float] = []
    chunk_runs: list[int] = []
    for seq in sequences:
        if isinstance(seq, SequenceNeighbours):
            res = seq
            tok = as_tokenizer(tokenizer) if tokenizer is not None else (res.tokenizer or _store_tokenizer(store))
        else:
            tok = _store_tokenizer(store) if tokenizer is None else as_tokenizer(tokenizer)
            res = retrieve_sequence(store, seq, k=k, tokenizer=tok, **kwargs)
        for u, hits in enumerate(res.neighbours):
            src = res.retrieved_with[u]
            if src is None or not hits:
                continue
            q_ids = tok.encode(res.chunks[src].text)
            if not q_ids:
                continue
            runs = [
                longest_common_run(q_ids, ids)
                for ids in tok.encode_batch([_neighbour_text(h, overlap_continuation) for h in hits])
            ]
            vals = [min(1.0, r / len(q_ids)) for r in runs]
            pair_vals.extend(vals)
            chunk_vals.append(max(vals))
            chunk_runs.append(max(runs))
    cv = np.asarray(chunk_vals, dtype=np.float64)
    cr = np.asarray(chunk_runs, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    hist = np.histogram(cv, bins=edges)[0] if len(cv) else np.zeros(bins, dtype=int)
    qs = {float(p): (float(np.quantile(cv, p)) if len(cv) else 0.0) for p in quantiles}
    rq = {float(p): (float(np.quantile(cr, p)) if len(cr) else 0.0) for p in quantiles}
    return LeakageReport(
        n_chunks=len(cv),
        n_pairs=len(pair_vals),
        mean=float(cv.mean()) if len(cv) else 0.0,
        quantiles=qs,
        run_tokens_quantiles=rq,
        bin_edges=[float(e) for e in edges],
        histogram=[int(c) for c in hist],
        pair_values=np.asarray(pair_vals, dtype=np.float64),
        chunk_values=cv,
        chunk_runs=cr,
    )


# --------------------------------------------------------------------------- prefetching
@dataclass(frozen=True)
class PrefetchResult:
    """What :meth:`Prefetcher.get` served for chunk ``chunk``.

    ``served`` is the chunk whose neighbours ``hits`` are: ``chunk`` itself,
    or ``chunk - 1`` when ``stale`` (None, with no hits, when chunk 0 was not
    ready in stale mode). ``waited`` is the time ``get`` blocked, in seconds.
    """

    chunk: int
    served: int | None
    hits: list[Hit]
    stale: bool
    waited: float

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)


class Prefetcher:
    """Hide retrieval latency behind generation with a background thread pool.

    ``submit(chunk)`` starts the search for the next chunk (text or token ids
    of ``tokenizer``) and returns its index ``u``; the LM keeps generating;
    ``get(u)`` returns its neighbours, blocking only if the search is not done.

    ``mode="exact"`` (default) always serves chunk ``u``'s own neighbours.
    ``mode="stale"`` serves chunk ``u-1``'s when ``u``'s are not ready within
    ``max_wait`` seconds (chunk 0: no neighbours): the search for ``u`` then
    overlaps the generation of the next chunk, at the price of neighbours one
    chunk older (the reviewer's "K-2" trade-off). ``stats`` counts both.

    ``store`` is anything with ``query_many(texts, k, **kwargs)``. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        store: Any,
        k: int = 2,
        *,
        mode: str = "exact",
        max_wait: float = 0.0,
        workers: int = 2,
        tokenizer: Any = None,
        **query_kwargs: Any,
    ) -> None:
        if mode not in ("exact", "stale"):
            raise InvalidInputError(f"mode must be 'exact' or 'stale', got {mode!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if not isinstance(workers, int) or workers < 1:
            raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
        self.store = store
        self.k = k
        self.mode = mode
        self.max_wait = float(max_wait)
        self.query_kwargs = query_kwargs
        self._tokenizer = tokenizer
        self._tok: LMTokenizer | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragstore-prefetch")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"submitted": 0, "served": 0, "stale": 0, "waited": 0.0}

    def _text(self, chunk: Any) -> str:
        if _is_token_ids(chunk):
            if self._tok is None:
                if self._tokenizer is None:
                    if not hasattr(self.store, "chunker"):
                        raise InvalidInputError("pass tokenizer= to submit token ids")
                    self._tok = _store_tokenizer(self.store)
                else:
                    self._tok = as_tokenizer(self._tokenizer)
            return self._tok.decode(np.asarray(chunk).reshape(-1).tolist())
        return check_text(chunk, "chunk text")

    def _search(self, text: str) -> list[Hit]:
        if not text.strip():
            return []
        return self.store.query_many([text], self.k, **self.query_kwargs)[0]

    def submit(self, chunk: Any) -> int:
        """Start searching the neighbours of the next chunk; returns its index."""
        if self._closed:
            raise InvalidInputError("this Prefetcher is closed")
        text = self._text(chunk)
        with self._lock:
            u = len(self._futures)
            self._futures.append(self._pool.submit(self._search, text))
            self.stats["submitted"] += 1
        return u

    def ready(self, u: int) -> bool:
        return self._future(u).done()

    def _future(self, u: int) -> Future:
        with self._lock:
            if not isinstance(u, int) or not 0 <= u < len(self._futures):
                raise InvalidInputError(f"chunk {u!r} was never submitted ({len(self._futures)} so far)")
            return self._futures[u]

    def get(self, u: int, timeout: float | None = None) -> PrefetchResult:
        """Neighbours for chunk ``u`` (see the class doc for stale mode)."""
        fut = self._future(u)
        t0 = time.perf_counter()
        if self.mode == "stale" and not fut.done():
            if self.max_wait > 0:
                try:
                    fut.result(timeout=self.max_wait)
                except TimeoutError:
                    pass
            if not fut.done():
                if u == 0:
                    res = PrefetchResult(u, None, [], True, time.perf_counter() - t0)
                else:
                    hits = self._future(u - 1).result(timeout=timeout)
                    res = PrefetchResult(u, u - 1, hits, True, time.perf_counter() - t0)
                self._count(res)
                return res
        hits = fut.result(timeout=timeout)
        res = PrefetchResult(u, u, hits, False, time.perf_counter() - t0)
        self._count(res)
        return res

    def _count(self, res: PrefetchResult) -> None:
        with self._lock:
            self.stats["served"] += 1
            self.stats["stale"] += int(res.stale)
            self.stats["waited"] += res.waited

    def close(self) -> None:
        """Stop the threads (pending searches are cancelled)."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
