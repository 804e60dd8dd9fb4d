"""The query path of :class:`ragstore.Store`: HNSW search, exact re-scoring, hits.

A mixin so that store.py keeps the write path and this module the read path.
It relies on the store's ``config``, ``_rec`` (records), ``_index`` (vindex),
``_mutex``, ``_catch_up``, ``_check_*`` helpers and ``_doc_vectors``.

Resolution is batched: after one usearch search for all queries, the exact
vectors of every candidate come from one LMDB ``getmulti``, the chunk records
of every chosen hit and of the chunk after it (its continuation) from a second
one, and their documents from a third. A query whose candidates run short
(exclusions, deletes racing the index) falls back to a per-query loop that
widens the search.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .chunking import check_text
from ..errors import InvalidInputError
from .records import from_u64, u64, unpack
from ..types import Hit

__all__ = ["QueryMixin"]


class QueryMixin:
    # ------------------------------------------------------------------ queries
    def _query_matrix(self, queries: Any) -> np.ndarray:
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, np.ndarray):
            return self._check_vectors(queries, None, "query vectors")
        queries = list(queries)
        if not queries:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        if all(isinstance(q, str) for q in queries):
            for q in queries:
                check_text(q, "query text")
            return self.embed(queries)
        if any(isinstance(q, str) for q in queries):
            raise InvalidInputError("queries must be all texts or all vectors, not a mix")
        try:
            stacked = np.stack([np.asarray(q) for q in queries])
        except ValueError:
            raise InvalidInputError(
                f"query vectors have different lengths; each must have the store's dimension {self.config.dim}"
            ) from None
        return self._check_vectors(stacked, None, "query vectors")

    def query(
        self,
        query: "str | np.ndarray | Sequence[float]",
        k: int = 10,
        *,
        sources: Sequence[str] | None = None,
        exclude_docs: Iterable[str] | None = None,
        rerank: bool | None = None,
        exact: bool = False,
        expansion: int | None = None,
        oversample: int | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest chunks to a text or a vector, best first.

        - ``sources``: search only these sources' shards (unknown names match nothing).
        - ``exclude_docs``: never return chunks of these documents; k hits are
          still returned when k other chunks exist (the search widens as needed).
        - ``rerank``: re-score ``oversample * k`` index candidates with the exact
          vectors kept in LMDB, so scores are exact. Default: on when the index
          is quantized (f16, i8), off for an f32 index (its scores are exact).
        - ``oversample``: candidates re-scored per hit. Default 1 for an f16
          index (f16 ranks like f32: more candidates buy no recall, measured in
          docs/benchmarks.md; the scores are still exact) and 4 for i8.
        - ``exact``: brute force over every stored vector (slow; ground truth).
        - ``expansion``: HNSW search breadth for this query (higher: better recall).
        """
        if isinstance(query, str):
            q = query
        else:
            q = np.asarray(query)
            if q.ndim != 1:
                raise InvalidInputError(f"query vector must be 1-D, got shape {q.shape}; use query_many for several")
            q = q[None, :]
        return self.query_many(
            q, k, sources=sources, exclude_docs=exclude_docs, rerank=rerank, exact=exact,
            expansion=expansion, oversample=oversample,
        )[0]

    def query_many(
        self,
        queries: "Sequence[str] | np.ndarray",
        k: int = 10,
        *,
        sources: Sequence[str] | None = None,
        exclude_docs: Iterable[str] | None = None,
        rerank: bool | None = None,
        exact: bool = False,
        expansion: int | None = None,
        oversample: int | None = None,
    ) -> list[list[Hit]]:
        """:meth:`query` for many texts (or a 2-D array) at once: one list of hits each.

        ``exclude_docs`` is a flat list of ids excluded from every query, or one
        iterable of ids per query (RETRO training batches mix documents).
        """
        self._check_open()
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if oversample is None:
            oversample = 4 if self.config.index_dtype == "i8" else 1
        if not isinstance(oversample, int) or isinstance(oversample, bool) or oversample < 1:
            raise InvalidInputError(f"oversample must be a positive integer, got {oversample!r}")
        if isinstance(sources, str):
            sources = [sources]
        shard_names = None if sources is None else list(dict.fromkeys(self._check_source(s) for s in sources))
        Q = self._query_matrix(queries)
        per_query = self._exclusions(exclude_docs, len(Q))
        if rerank is None:
            rerank = self.config.index_dtype != "f32"
        with self._mutex, self._rec.read() as txn:
            self._catch_up(txn)
            if exact:
                return [self._exact(txn, q, k, shard_names, ex) for q, ex in zip(Q, per_query)]
            return self._search(txn, Q, k, shard_names, per_query, rerank, expansion, oversample)

    @staticmethod
    def _exclusions(exclude_docs: Any, n: int) -> list[frozenset]:
        """One exclusion set per query: ``exclude_docs`` is either ids for all
        queries, or (in query_many) one iterable of ids per query."""
        if exclude_docs is None:
            return [frozenset()] * n
        if isinstance(exclude_docs, str):
            return [frozenset([exclude_docs])] * n
        items = list(exclude_docs)
        if items and all(x is None or (not isinstance(x, str) and isinstance(x, Iterable)) for x in items):
            if len(items) != n:
                raise InvalidInputError(
                    f"exclude_docs has {len(items)} per-query sets for {n} queries; give one per query, "
                    "or a flat list of ids to exclude from every query"
                )
            return [frozenset([x] if isinstance(x, str) else (x or ())) for x in items]
        return [frozenset(items)] * n

    def _score_from_distance(self, dist: np.ndarray) -> np.ndarray:
        return -dist if self.config.metric == "l2sq" else 1.0 - dist

    def _exact_scores(self, q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        if self.config.metric == "l2sq":
            diff = vecs - q
            return -np.einsum("ij,ij->i", diff, diff)
        return vecs @ q

    def _search(self, txn, Q, k, shard_names, per_query, rerank, expansion, oversample) -> list[list[Hit]]:
        available = self._index.shard_sizes(shard_names)
        if available == 0:
            return [[] for _ in Q]
        want = k * oversample if rerank else k
        most = max((len(e) for e in per_query), default=0)
        if most:
            want += min(most * 4, 4 * k)
        count = max(1, min(want, available))
        keys, dist = self._index.search(Q, count, shard_names, expansion)
        out = self._resolve_batch(txn, Q, keys, dist, k, per_query, rerank)
        for i, hits in enumerate(out):
            if hits is None:
                out[i] = self._search_one(txn, Q[i], keys[i], dist[i], count, available, k, shard_names,
                                          per_query[i], rerank, expansion)
        return out

    def _search_one(self, txn, q, ki, di, c, available, k, shard_names, excluded, rerank, expansion) -> list[Hit]:
        """One query whose first candidates did not give k hits: widen the search."""
        while True:
            hits, accepted = self._resolve(txn, q, ki, di, k, excluded, rerank)
            if accepted >= k:
                return hits
            if c >= available:
                if len(hits) < k and (excluded or (ki != 0).sum() < available):
                    # HNSW could not reach every vector (e.g. many exact duplicates):
                    # a brute-force pass keeps the promise of k hits when k exist.
                    hits = self._exact(txn, q, k, shard_names, excluded)
                return hits
            c = min(available, c * 4)
            kk, dd = self._index.search(q[None, :], c, shard_names, max(expansion or 0, c))
            ki, di = kk[0], dd[0]

    def _vectors_of(self, txn, keys: list[int]) -> tuple[list[int], np.ndarray]:
        """Exact stored vectors of chunk ids, skipping deleted ones, in one LMDB call."""
        found, rows = self._rec.read_vectors(txn, keys)
        if not found:
            return [], np.zeros((0, self.config.dim), dtype=np.float32)
        arr = np.frombuffer(b"".join(rows), dtype=self._vdtype).reshape(len(found), self.config.dim)
        return found, arr.astype(np.float32, copy=False)

    def _resolve_batch(self, txn, Q, keys, dist, k, per_query, rerank) -> list[list[Hit] | None]:
        """Hits of every query from one search's candidates; None where a query
        needs :meth:`_search_one` (fewer than k candidates qualified)."""
        n = len(Q)
        valid = (keys != 0) & np.isfinite(dist)
        if rerank:
            uniq = np.unique(keys[valid])
            found, vecs = self._vectors_of(txn, uniq.tolist())
            found_arr = np.asarray(found, dtype=np.uint64)
            row = np.searchsorted(found_arr, keys) if len(found_arr) else np.zeros(keys.shape, dtype=np.intp)
            row = np.minimum(row, max(len(found_arr) - 1, 0))
            present = valid & (found_arr[row] == keys) if len(found_arr) else np.zeros(keys.shape, dtype=bool)
            scores = np.full(keys.shape, -np.inf, dtype=np.float32)
            for i in range(n):
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

        # candidates whose chunk records are needed: the top k, or all of them
        # for a query with exclusions (which of them qualify is not known yet)
        cand: list[list[int]] = []
        want: set[int] = set()
        for i in range(n):
            take = ranked_keys[i][: n_present[i] if per_query[i] else min(k, n_present[i])]
            cand.append(take)
            want.update(take)
            want.update(key + 1 for key in take)  # the continuation, when it is the same document's
        rec = self._rec
        records = {
            from_u64(kb): v
            for kb, v in txn.cursor(db=rec.chunks).getmulti([u64(x) for x in sorted(want)])
        }
        unpacked: dict[int, list] = {}

        def chunk(key: int) -> list | None:
            c = unpacked.get(key)
            if c is None:
                raw = records.get(key)
                if raw is None:
                    return None
                c = unpacked[key] = unpack(raw)
            return c

        chosen_all: list[list[tuple[float, int, list]] | None] = []
        doc_ids: set[str] = set()
        for i in range(n):
            excluded = per_query[i]
            chosen = []
            for j, key in enumerate(cand[i]):
                c = chunk(key)
                if c is None or c[0] in excluded:
                    continue  # deleted after the index saw it, or excluded
                chosen.append((ranked_scores[i][j], key, c))
                if len(chosen) == k:
                    break
            if len(chosen) < k:
                chosen_all.append(None)
                continue
            chosen_all.append(chosen)
            doc_ids.update(c[0] for _, _, c in chosen)
        docs = {
            bytes(kb).decode(): unpack(v)
            for kb, v in txn.cursor(db=rec.docs).getmulti(sorted(d.encode() for d in doc_ids))
        }
        out: list[list[Hit] | None] = []
        for chosen in chosen_all:
            if chosen is None:
                out.append(None)
                continue
            out.append([_hit(score, key, c, docs[c[0]], chunk(key + 1)) for score, key, c in chosen])
        return out

    def _resolve(self, txn, q, keys, dists, k, excluded, rerank) -> tuple[list[Hit], int]:
        """Turn index candidates into up to k hits; also returns how many candidates qualified."""
        rec = self._rec
        valid = [(key, dist) for key, dist in zip(keys.tolist(), dists.tolist()) if key != 0 and dist != float("inf")]
        if rerank:
            found, vecs = self._vectors_of(txn, [key for key, _ in valid])
            scores = self._exact_scores(q, vecs).tolist() if found else []
            ranked = sorted(zip(scores, found), key=lambda t: (-t[0], t[1]))
        else:
            ranked = [(float(s), key) for (key, _), s in zip(valid, self._score_from_distance(np.array([d for _, d in valid], dtype=np.float32)).tolist())]
            ranked.sort(key=lambda t: (-t[0], t[1]))
        cur = txn.cursor(db=rec.chunks)
        records = {from_u64(kb): v for kb, v in cur.getmulti([u64(key) for _, key in ranked])}
        chosen: list[tuple[float, int, list]] = []
        qualified = 0
        for score, key in ranked:
            raw = records.get(key)
            if raw is None:
                continue  # deleted after the index saw it
            c = unpack(raw)
            if c[0] in excluded:
                continue
            qualified += 1
            if len(chosen) < k:
                chosen.append((float(score), key, c))
            elif not excluded:
                qualified = len(ranked)  # nothing is filtered: every candidate qualifies
                break
        return self._hits(txn, chosen), qualified

    def _hits(self, txn, chosen: list[tuple[float, int, list]]) -> list[Hit]:
        """Build hits with their documents and continuations, fetched in batches."""
        rec = self._rec
        ids = sorted({c[0].encode() for _, _, c in chosen})
        docs = {bytes(kb).decode(): unpack(v) for kb, v in txn.cursor(db=rec.docs).getmulti(ids)}
        want = sorted({key + 1 for _, key, _ in chosen})
        nxt = {from_u64(kb): unpack(v) for kb, v in txn.cursor(db=rec.chunks).getmulti([u64(x) for x in want])}
        return [_hit(score, key, c, docs[c[0]], nxt.get(key + 1)) for score, key, c in chosen]

    def _make_hit(self, txn, key: int, score: float) -> Hit | None:
        c = self._rec.get_chunk(txn, key)
        return None if c is None else self._hits(txn, [(score, key, c)])[0]

    def _exact(self, txn, q, k, shard_names, excluded) -> list[Hit]:
        want = None if shard_names is None else set(shard_names)
        all_keys, all_scores = [], []
        for kraw, raw in txn.cursor(db=self._rec.docs):
            doc = unpack(raw)
            if want is not None and doc["s"] not in want:
                continue
            if excluded and bytes(kraw).decode() in excluded:
                continue
            vecs = self._doc_vectors(txn, doc["c0"], doc["n"])
            if vecs is None:
                continue
            all_scores.append(self._exact_scores(q, vecs))
            all_keys.append(np.arange(doc["c0"], doc["c0"] + len(vecs), dtype=np.int64))
        if not all_keys:
            return []
        keys = np.concatenate(all_keys)
        scores = np.concatenate(all_scores)
        order = np.lexsort((keys, -scores))[:k]
        return self._hits(txn, [(float(scores[j]), int(keys[j]), self._rec.get_chunk(txn, int(keys[j]))) for j in order])


def _hit(score: float, key: int, c: list, doc: dict, nxt: list | None) -> Hit:
    """A hit from its chunk record ``c``, its document and the record of chunk ``key + 1``."""
    # chunk ids of a document are consecutive, so chunk key + 1 is this chunk's
    # continuation exactly when its record says it is the next of the same document
    cont = nxt[2] if nxt is not None and nxt[0] == c[0] and nxt[1] == c[1] + 1 else None
    return Hit(chunk_id=key, doc_id=c[0], source=doc["s"] or None, position=c[1], score=score,
               text=c[2], continuation=cont, start=c[3], end=c[4], meta=doc["m"])
