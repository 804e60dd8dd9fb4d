"""bench_peers.py's adapter for ragstore itself (f16, i8 or f32 vectors)."""

from __future__ import annotations

import numpy as np

from peers_common import EF_SWEEP, HNSW_EF_CONSTRUCTION, HNSW_M, System, _ver

__all__ = ["Ragstore"]


# --------------------------------------------------------------------------- ragstore
class Ragstore(System):
    family = "ragstore"
    stores_text = True
    reclaim_how = "Store.compact()"
    param_name = "expansion"
    batch_size = 1024

    def __init__(self, index_dtype: str = "f16", threads: int = 0):
        super().__init__(threads)
        self.index_dtype = index_dtype
        self.name = f"ragstore-{index_dtype}"
        self.label = f"ragstore ({index_dtype} index)"
        self.durable = (
            f"add_many(Doc(..., vectors=), batch_size={self.batch_size}) + close(): chunking the text, "
            "LMDB commits fsynced (sync=True), HNSW built, index checkpoint fsynced"
        )
        if index_dtype == "f32":
            self.variants = {"no rerank": EF_SWEEP}
            self.primary_variant = "no rerank"
        else:
            # the default (rerank x1: the index's top k, re-scored exactly) first;
            # with rerank x4 the index is asked for 4k candidates, so its expansion
            # is at least 40: smaller settings would repeat the same point
            self.variants = {
                "rerank x1": EF_SWEEP,
                "rerank x4": [40] + [e for e in EF_SWEEP if e > 40],
                "no rerank": EF_SWEEP,
            }
            self.primary_variant = "rerank x1" if index_dtype == "f16" else "rerank x4"
        self.s = None
        self._doc_row: dict[str, int] | None = None

    def versions(self):
        import ragstore

        return {"ragstore": ragstore.__version__, "usearch": _ver("usearch"), "lmdb": _ver("lmdb")}

    def build(self, path, data):
        import ragstore

        s = ragstore.open(
            path,
            index_dtype=self.index_dtype,
            connectivity=HNSW_M,
            expansion_add=HNSW_EF_CONSTRUCTION,
            threads=self.threads,
        )
        X, starts, texts, ids = data.X, data.doc_start, data.doc_texts, data.doc_ids
        docs = (
            ragstore.Doc(ids[i], texts[i], "wikipedia", None, X[starts[i] : starts[i + 1]])
            for i in range(len(ids))
        )
        summary = s.add_many(docs, batch_size=self.batch_size)
        s.close()
        return {"chunks_added": summary.chunks}

    def open(self, path, data=None, readonly=True):
        import ragstore

        self.s = ragstore.open(path, readonly=readonly, threads=self.threads)
        if data is not None:
            self._doc_row = {d: int(data.doc_start[i]) for i, d in enumerate(data.doc_ids)}

    def _kw(self, variant, p):
        if variant == "no rerank":
            return dict(rerank=False, expansion=p)
        return dict(rerank=True, expansion=p, oversample=int(variant.split("x")[1]))

    def _row(self, h) -> int:
        if self._doc_row is None:
            return h.chunk_id - 1
        return self._doc_row[h.doc_id] + h.position

    def search_batch(self, Q, k, variant, p):
        res = self.s.query_many(Q, k, **self._kw(variant, p))
        out = np.full((len(Q), k), -1, dtype=np.int64)
        for i, hits in enumerate(res):
            for j, h in enumerate(hits):
                out[i, j] = self._row(h)
        return out

    def search_one(self, q, k, variant, p):
        return [self._row(h) for h in self.s.query(q, k, **self._kw(variant, p))]

    def delete(self, rows, docs, data):
        self.s.delete_many([data.doc_ids[d] for d in docs])

    def reclaim(self):
        self.s.compact()
        return True

    def close(self):
        if self.s is not None:
            self.s.close()
            self.s = None
