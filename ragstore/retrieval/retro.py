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
  its neighbours, as a fraction of the chunk); defined in :mod:`.leakage`.
- :class:`Prefetcher`: start the search for chunk ``u`` while the LM generates,
  with an optional *stale* mode that serves chunk ``u-1``'s neighbours when
  ``u``'s are not ready; defined in :mod:`.prefetch`.
- :class:`LMTokenizer`, :func:`as_tokenizer`: the LM's tokenizer, defined in
  :mod:`.lm_tokenizer`.

All of these stay importable from this module.

Causality: the neighbours of chunk ``u`` are retrieved *with* chunk ``u``'s
tokens, so they may only inform the tokens that come after chunk ``u``: the
tokens of chunk ``u+1`` onwards (RETRO attends ``E_u`` from the last token
of ``C_u`` up to the second to last token of ``C_{u+1}``). ``shift=True`` lays
them out that way: position ``u`` holds chunk ``u-1``'s neighbours and the
first position holds none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.chunking import check_text
from ..errors import InvalidInputError
from ..types import Hit
from .leakage import LeakageReport, _neighbour_text, leakage, longest_common_run
from .lm_tokenizer import LMTokenizer, _is_token_ids, _store_tokenizer, as_tokenizer
from .prefetch import Prefetcher, PrefetchResult

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
        for (u, j, off), ids in zip(slots, tok.encode_batch(texts), strict=True):
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
    exclude_each: Sequence[Iterable[str]] | None = None,
) -> tuple[list[list[Hit]], list[list[float]] | None]:
    """Up to ``k`` neighbours per chunk; ``exclude_each[i]``: documents excluded for chunk ``i`` alone."""
    texts = [c.text for c in chunks]
    live = [i for i, t in enumerate(texts) if t.strip()]  # a window of special tokens only has no text
    out: list[list[Hit]] = [[] for _ in chunks]
    ovl: list[list[float]] = [[] for _ in chunks]
    need_overlap = with_overlap or max_overlap is not None
    chunk_ids = tok.encode_batch(texts) if need_overlap else []  # read only when need_overlap
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
        excl = excluded if exclude_each is None else [exclude_each[i] for i in todo]
        results = store.query_many([texts[i] for i in todo], fetch, exclude_docs=excl, **query_kwargs)
        again = []
        for i, hits in zip(todo, results, strict=True):
            scores = _scores(i, hits)
            kept = [(h, s) for h, s in zip(hits, scores, strict=True) if max_overlap is None or s <= max_overlap]
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
        retrieved_with = [None, *retrieved_with[:-1]]
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


def retrieve_document(
    store: Any, doc_id: str, *, k: int = 2, exclude_self: bool = True, **kwargs: Any
) -> SequenceNeighbours:
    """:func:`retrieve_sequence` over a stored document, excluding the document itself.

    This is how RETRO prepares training data: the neighbours of a training
    sequence never come from its own document.
    """
    doc = store.get(doc_id)
    excl = set(kwargs.pop("exclude_docs", None) or ())
    if exclude_self:
        excl.add(doc_id)
    return retrieve_sequence(store, doc.text, k=k, exclude_docs=excl or None, **kwargs)


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
