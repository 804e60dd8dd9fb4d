"""The query path: HNSW search over the chosen shards, exact re-scoring, hits.

One resolution path turns index candidates into hits for any number of
queries at once: the exact vectors of every candidate come from one LMDB
``getmulti``, the chunk records of the candidates and of the chunk after each
(its continuation) from a second, their documents from a third. A query whose
candidates run short (exclusions, deletes racing the index) is searched again
wider, and by brute force once the index has nothing more to give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lmdb
import numpy as np

from ..config import QueryOptions
from ..errors import DamagedRecordError, InvalidInputError
from ..types import Hit
from .chunking import check_text
from .index import VectorIndex
from .inputs import check_source_filter
from .models import Models
from .records import ChunkRecord, DocRecord, Records, decode_chunk

__all__ = ["Searcher", "Plan"]

Chosen = tuple[float, int, ChunkRecord]  # score, chunk id, chunk record


class Plan:
    """A query's options with the store's defaults filled in and checked."""

    def __init__(self, opts: QueryOptions, index_dtype: str, n_queries: int) -> None:
        opts.validate()
        self.k: int = int(opts.k)
        self.exact = opts.exact
        self.expansion = opts.expansion
        self.rerank = opts.rerank if opts.rerank is not None else index_dtype != "f32"
        # f16 ranks like f32: re-scoring more candidates buys no recall (docs/benchmarks.md)
        self.oversample: int = opts.oversample if opts.oversample is not None else (4 if index_dtype == "i8" else 1)
        sources = [opts.sources] if isinstance(opts.sources, str) else opts.sources
        if sources is not None and not isinstance(sources, Iterable):
            raise InvalidInputError(f"sources must be source names (str), got {type(sources).__name__}")
        self.shards = None if sources is None else list(dict.fromkeys(check_source_filter(s) for s in sources))
        self.excluded = _exclusions(opts.exclude_docs, n_queries)


def _exclusions(exclude_docs: Any, n: int) -> list[frozenset]:
    """One exclusion set per query: ``exclude_docs`` is either ids for all
    queries, or (in query_many) one iterable of ids per query."""
    if exclude_docs is None:
        return [frozenset()] * n
    if isinstance(exclude_docs, str):
        return [frozenset([exclude_docs])] * n
    if not isinstance(exclude_docs, Iterable):
        raise InvalidInputError(f"exclude_docs must be ids (str), got {type(exclude_docs).__name__}")
    items = list(exclude_docs)
    try:
        if items and all(x is None or (not isinstance(x, str) and isinstance(x, Iterable)) for x in items):
            if len(items) != n:
                raise InvalidInputError(
                    f"exclude_docs has {len(items)} per-query sets for {n} queries; give one per query, "
                    "or a flat list of ids to exclude from every query"
                )
            return [frozenset([x] if isinstance(x, str) else (x or ())) for x in items]
        return [frozenset(items)] * n
    except TypeError as e:  # an id that cannot be hashed (a dict, a list in a flat list)
        raise InvalidInputError(f"exclude_docs must hold document ids (str): {e}") from None


class Searcher:
    """Searches ``index`` and resolves hits from ``records``; the caller holds a read txn."""

    def __init__(self, records: Records, index: VectorIndex, models: Models) -> None:
        self.records = records
        self.index = index
        self.models = models
        self.config = models.config

    # ------------------------------------------------------------------ inputs
    def matrix(self, queries: Any) -> np.ndarray:
        """Queries as a (n, dim) float32 array: texts are embedded, vectors checked."""
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, np.ndarray):
            return self.models.rules.check(queries, None, "query vectors")
        queries = list(queries)
        if not queries:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        if all(isinstance(q, str) for q in queries):
            for q in queries:
                check_text(q, "query text")
            return self.models.embed(queries)
        if any(isinstance(q, str) for q in queries):
            raise InvalidInputError("queries must be all texts or all vectors, not a mix")
        try:
            stacked = np.stack([np.asarray(q) for q in queries])
        except ValueError:
            raise InvalidInputError(
                f"query vectors have different lengths; each must have the store's dimension {self.config.dim}"
            ) from None
        return self.models.rules.check(stacked, None, "query vectors")

    # ------------------------------------------------------------------ search
    def search(self, txn: lmdb.Transaction, Q: np.ndarray, plan: Plan) -> list[list[Hit]]:
        if plan.exact:
            return [self.exact(txn, q, plan.k, plan.shards, ex) for q, ex in zip(Q, plan.excluded, strict=True)]
        available = self.index.shard_sizes(plan.shards)
        if available == 0:
            return [[] for _ in Q]
        k = plan.k
        want = k * plan.oversample if plan.rerank else k
        most = max((len(e) for e in plan.excluded), default=0)
        if most:
            want += min(most * 4, 4 * k)
        count = max(1, min(want, available))
        keys, dist = self.index.search(Q, count, plan.shards, plan.expansion)
        out = self._resolve(txn, Q, keys, dist, k, plan.excluded, plan.rerank)
        for i, hits in enumerate(out):
            if len(hits) < k:
                out[i] = self._widen(txn, Q[i], keys[i], hits, count, available, plan, plan.excluded[i])
        return out

    def _widen(self, txn: lmdb.Transaction, q: np.ndarray, ki: np.ndarray, hits: list[Hit], c: int, available: int,
               plan: Plan, excluded: frozenset) -> list[Hit]:
        """One query whose first candidates did not give k hits: search wider."""
        while len(hits) < plan.k:
            if c >= available:
                if excluded or (ki != 0).sum() < available:
                    # HNSW could not reach every vector (e.g. many exact duplicates):
                    # a brute-force pass keeps the promise of k hits when k exist.
                    return self.exact(txn, q, plan.k, plan.shards, excluded)
                return hits
            c = min(available, c * 4)
            kk, dd = self.index.search(q[None, :], c, plan.shards, max(plan.expansion or 0, c))
            ki = kk[0]
            hits = self._resolve(txn, q[None, :], kk, dd, plan.k, [excluded], plan.rerank)[0]
        return hits

    # ------------------------------------------------------------------ scores
    def _score_from_distance(self, dist: np.ndarray) -> np.ndarray:
        return -dist if self.config.metric == "l2sq" else 1.0 - dist

    def _exact_scores(self, q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        if self.config.metric == "l2sq":
            diff = vecs - q
            return -np.einsum("ij,ij->i", diff, diff)
        return vecs @ q

    # ------------------------------------------------------------------ resolution
    def _resolve(self, txn: lmdb.Transaction, Q: np.ndarray, keys: np.ndarray, dist: np.ndarray, k: int,
                 excluded: Sequence[frozenset], rerank: bool) -> list[list[Hit]]:
        """Up to k hits per query from the index's candidates (fewer: widen)."""
        valid = (keys != 0) & np.isfinite(dist)
        cfg = self.config
        if rerank:
            uniq = np.unique(keys[valid])
            found, vecs = self.records.vectors_of(txn, uniq.tolist(), cfg.vector_numpy_dtype, cfg.dim)
            found_arr = np.asarray(found, dtype=np.uint64)
            if len(found_arr):
                row = np.minimum(np.searchsorted(found_arr, keys), len(found_arr) - 1)
                present = valid & (found_arr[row] == keys)
            else:
                row = np.zeros(keys.shape, dtype=np.intp)
                present = np.zeros(keys.shape, dtype=bool)
            scores = np.full(keys.shape, -np.inf, dtype=np.float32)
            # one query at a time, computed as exact=True computes them: equal scores, bit for bit
            for i in range(len(Q)):
                m = present[i]
                if m.any():
                    scores[i, m] = self._exact_scores(Q[i], vecs[row[i, m]])
        else:
            present = valid
            scores = np.where(valid, self._score_from_distance(dist), -np.inf).astype(np.float32)
        # best first, ties by chunk id: the order brute force (exact=True) gives
        order = np.lexsort((keys, -scores))
        ranked_keys = np.take_along_axis(keys, order, 1).tolist()
        ranked_scores = np.take_along_axis(scores, order, 1).tolist()
        n_present = present.sum(axis=1).tolist()
        # candidates whose chunk records are needed: the top k, or all of them for
        # a query with exclusions (which of them qualify is not known yet)
        cand = [ranked_keys[i][: n_present[i] if excluded[i] else min(k, n_present[i])] for i in range(len(Q))]
        want = {key for c in cand for key in c}
        # one LMDB call for the candidates and the chunk after each (its continuation)
        raw = self.records.get_raw_chunks(txn, want | {key + 1 for key in want})
        decoded: dict[int, ChunkRecord] = {}

        def chunk(key: int) -> ChunkRecord | None:
            # decoded once, on first use: most candidates past the top k are never looked at
            c = decoded.get(key)
            if c is None:
                r = raw.get(key)
                if r is None:
                    return None
                c = decoded[key] = decode_chunk(r)
            return c

        chosen_all: list[list[Chosen]] = []
        for i, ex in enumerate(excluded):
            chosen: list[Chosen] = []
            for j, key in enumerate(cand[i]):
                c = chunk(key)
                if c is None or c.doc_id in ex:
                    continue  # deleted after the index saw it, or excluded
                chosen.append((ranked_scores[i][j], key, c))
                if len(chosen) == k:
                    break
            chosen_all.append(chosen)
        return self._build(txn, chosen_all, chunk)

    def hits(self, txn: lmdb.Transaction, chosen_all: list[list[Chosen]]) -> list[list[Hit]]:
        """Hits from chosen chunk records, with their documents and continuations, fetched in batches."""
        raw = self.records.get_raw_chunks(txn, (key + 1 for chosen in chosen_all for _, key, _ in chosen))

        def chunk(key: int) -> ChunkRecord | None:
            r = raw.get(key)
            return None if r is None else decode_chunk(r)

        return self._build(txn, chosen_all, chunk)

    def _build(self, txn: lmdb.Transaction, chosen_all: list[list[Chosen]],
               chunk: Callable[[int], ChunkRecord | None]) -> list[list[Hit]]:
        docs = self.records.get_docs(txn, {c.doc_id for chosen in chosen_all for _, _, c in chosen})
        for chosen in chosen_all:
            for _, key, c in chosen:
                if c.doc_id not in docs:  # a chunk outlives its document only when a record is damaged
                    raise DamagedRecordError(f"chunk {key} belongs to document {c.doc_id!r}, which has no record")
        return [[_hit(score, key, c, docs[c.doc_id], chunk(key + 1)) for score, key, c in chosen]
                for chosen in chosen_all]

    def chunk_hit(self, txn: lmdb.Transaction, chunk_id: int) -> Hit | None:
        c = self.records.get_chunk(txn, chunk_id)
        return None if c is None else self.hits(txn, [[(0.0, chunk_id, c)]])[0][0]

    def exact(self, txn: lmdb.Transaction, q: np.ndarray, k: int, shards: list[str] | None,
              excluded: frozenset) -> list[Hit]:
        """Brute force over every stored vector of the chosen shards."""
        cfg = self.config
        want = None if shards is None else set(shards)
        all_keys, all_scores = [], []
        for doc_id, doc in self.records.iter_docs(txn):
            if (want is not None and doc.source not in want) or doc_id in excluded:
                continue
            vecs = self.records.doc_vectors(txn, doc, cfg.vector_numpy_dtype, cfg.dim)
            if vecs is None:
                continue
            all_scores.append(self._exact_scores(q, vecs))
            all_keys.append(np.arange(doc.first_chunk, doc.first_chunk + len(vecs), dtype=np.int64))
        if not all_keys:
            return []
        keys = np.concatenate(all_keys)
        scores = np.concatenate(all_scores)
        order = np.lexsort((keys, -scores))[:k]
        records = self.records.get_chunks(txn, (int(keys[j]) for j in order))
        chosen = [(float(scores[j]), int(keys[j]), records[int(keys[j])]) for j in order if int(keys[j]) in records]
        return self.hits(txn, [chosen])[0]


def _hit(score: float, key: int, c: ChunkRecord, doc: DocRecord, nxt: ChunkRecord | None) -> Hit:
    """A hit from its chunk record, its document and the record of chunk ``key + 1``."""
    # chunk ids of a document are consecutive, so chunk key + 1 is this chunk's
    # continuation exactly when its record says it is the next of the same document
    cont = nxt.text if nxt is not None and nxt.doc_id == c.doc_id and nxt.position == c.position + 1 else None
    # Every field set at once on a new instance: what the frozen dataclass's __init__ does
    # one object.__setattr__ at a time (2.8 us a hit against 0.6, for k hits of every query)
    h = _new(Hit)
    h.__dict__.update(chunk_id=key, doc_id=c.doc_id, source=doc.source or None, position=c.position, score=score,
                      text=c.text, continuation=cont, start=c.start, end=c.end, meta=doc.meta)
    return h


_new = object.__new__
