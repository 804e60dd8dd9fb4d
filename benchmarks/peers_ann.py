"""bench_peers.py's adapters for vector-index libraries: usearch, faiss (HNSW, IVF-PQ), hnswlib.

These keep vectors only (no text, no documents); durability is an explicit
save plus fsync.
"""

from __future__ import annotations

import os

import numpy as np

from peers_common import EF_SWEEP, HNSW_EF_CONSTRUCTION, HNSW_M, System, _rows, _ver, fsync_tree

__all__ = ["USearch", "FaissHNSW", "FaissIVFPQ", "Hnswlib"]


# --------------------------------------------------------------------------- usearch
class USearch(System):
    family = "usearch"
    param_name = "expansion_search"
    reclaim_how = "n/a (remove() leaves tombstones; no compaction in the Python API)"

    def __init__(self, dtype: str = "f16", threads: int = 0):
        super().__init__(threads)
        self.dtype = dtype
        self.name = f"usearch-{dtype}"
        self.label = f"usearch ({dtype})"
        self.durable = "Index.add(all) + save() + fsync"
        self.variants = {"": EF_SWEEP}
        self.primary_variant = ""
        self.ix = None

    def versions(self):
        return {"usearch": _ver("usearch")}

    def _new(self):
        from usearch.index import Index

        return Index(
            ndim=384, metric="cos", dtype=self.dtype, connectivity=HNSW_M,
            expansion_add=HNSW_EF_CONSTRUCTION, expansion_search=64,
        )

    def build(self, path, data):
        os.makedirs(path, exist_ok=True)
        ix = self._new()
        ix.add(np.arange(data.n, dtype=np.uint64), data.X, threads=self.threads)
        f = os.path.join(path, "index.usearch")
        ix.save(f)
        fsync_tree(path)
        return {}

    def open(self, path, data=None):
        self.ix = self._new()
        self.ix.load(os.path.join(path, "index.usearch"))
        self.path = path

    def prepare(self, variant, p):
        self.ix.expansion_search = p

    def search_batch(self, Q, k, variant, p):
        self.ix.expansion_search = p
        m = self.ix.search(Q, k, threads=self.threads)
        keys = np.asarray(m.keys).astype(np.int64)
        cnt = np.asarray(m.counts)
        keys[np.arange(keys.shape[1])[None, :] >= cnt[:, None]] = -1
        return _rows(keys, k)

    def search_one(self, q, k, variant, p):
        m = self.ix.search(q, k, threads=1)
        return np.asarray(m.keys).astype(np.int64).tolist()

    def delete(self, rows, docs, data):
        self.ix.remove(rows.astype(np.uint64))
        self.ix.save(os.path.join(self.path, "index.usearch"))
        fsync_tree(self.path)


# --------------------------------------------------------------------------- faiss
class FaissHNSW(System):
    name = "faiss-hnsw"
    label = "FAISS IndexHNSWFlat"
    family = "faiss"
    durable = "index.add(all) + write_index + fsync"
    param_name = "efSearch"
    can_delete = False
    reclaim_how = "n/a (IndexHNSW cannot remove vectors)"
    variants = {"": EF_SWEEP}
    primary_variant = ""

    def versions(self):
        return {"faiss-cpu": _ver("faiss-cpu")}

    def all_threads(self):
        import faiss

        faiss.omp_set_num_threads(self.threads or os.cpu_count())

    def single_thread(self):
        import faiss

        faiss.omp_set_num_threads(1)

    def build(self, path, data):
        import faiss

        self.all_threads()
        os.makedirs(path, exist_ok=True)
        ix = faiss.IndexHNSWFlat(data.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        ix.add(data.X)
        faiss.write_index(ix, os.path.join(path, "index.faiss"))
        fsync_tree(path)
        return {}

    def open(self, path, data=None):
        import faiss

        self.ix = faiss.read_index(os.path.join(path, "index.faiss"))
        self.path = path

    def prepare(self, variant, p):
        self.ix.hnsw.efSearch = p

    def search_batch(self, Q, k, variant, p):
        self.ix.hnsw.efSearch = p
        _, ids = self.ix.search(Q, k)
        return _rows(ids.astype(np.int64), k)

    def search_one(self, q, k, variant, p):
        _, ids = self.ix.search(q[None, :], k)
        return ids[0].tolist()


class FaissIVFPQ(System):
    name = "faiss-ivfpq"
    family = "faiss"
    durable = "train (k-means on a sample) + add(all) + write_index + fsync"
    param_name = "nprobe"
    reclaim_how = "remove_ids() frees list entries at once; write_index"
    variants = {"": [1, 2, 4, 8, 16, 32, 64, 128, 256]}
    primary_variant = ""
    pq_m = 48

    @property
    def label(self):
        return f"FAISS IVF-PQ (PQ{self.pq_m}x8)"

    def versions(self):
        return {"faiss-cpu": _ver("faiss-cpu")}

    all_threads = FaissHNSW.all_threads
    single_thread = FaissHNSW.single_thread

    @staticmethod
    def nlist_for(n: int) -> int:
        # ~2*sqrt(n), a power of two: 512 for 100K, 1024 for 300K
        return int(2 ** round(np.log2(max(16.0, 2 * np.sqrt(n)))))

    def build(self, path, data):
        import faiss

        self.all_threads()
        os.makedirs(path, exist_ok=True)
        nlist = self.nlist_for(data.n)
        quant = faiss.IndexFlatIP(data.dim)
        ix = faiss.IndexIVFPQ(quant, data.dim, nlist, self.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = data.X[np.sort(rng.choice(data.n, min(data.n, 64 * nlist), replace=False))]
        ix.train(sample)
        ix.add(data.X)
        faiss.write_index(ix, os.path.join(path, "index.faiss"))
        fsync_tree(path)
        return {"nlist": nlist, "pq_m": self.pq_m, "train_sample": len(sample)}

    def open(self, path, data=None):
        import faiss

        self.ix = faiss.read_index(os.path.join(path, "index.faiss"))
        self.path = path

    def prepare(self, variant, p):
        self.ix.nprobe = p

    def search_batch(self, Q, k, variant, p):
        self.ix.nprobe = p
        _, ids = self.ix.search(Q, k)
        return _rows(ids.astype(np.int64), k)

    def search_one(self, q, k, variant, p):
        _, ids = self.ix.search(q[None, :], k)
        return ids[0].tolist()

    def delete(self, rows, docs, data):
        import faiss

        self.ix.remove_ids(faiss.IDSelectorBatch(rows.astype(np.int64)))
        faiss.write_index(self.ix, os.path.join(self.path, "index.faiss"))
        fsync_tree(self.path)


# --------------------------------------------------------------------------- hnswlib
class Hnswlib(System):
    name = "hnswlib"
    label = "hnswlib"
    family = "hnswlib"
    durable = "add_items(all) + save_index + fsync"
    param_name = "ef"
    reclaim_how = "n/a (mark_deleted(); slots reused only by later adds with replace_deleted)"
    variants = {"": EF_SWEEP}
    primary_variant = ""

    def versions(self):
        return {"hnswlib": _ver("hnswlib")}

    def all_threads(self):
        self.ix.set_num_threads(self.threads or os.cpu_count())

    def single_thread(self):
        self.ix.set_num_threads(1)

    def build(self, path, data):
        import hnswlib

        os.makedirs(path, exist_ok=True)
        ix = hnswlib.Index(space="ip", dim=data.dim)
        ix.init_index(max_elements=data.n, ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M)
        ix.set_num_threads(self.threads or os.cpu_count())
        ix.add_items(data.X, np.arange(data.n))
        ix.save_index(os.path.join(path, "index.bin"))
        fsync_tree(path)
        return {}

    def open(self, path, data=None):
        import hnswlib

        self.ix = hnswlib.Index(space="ip", dim=384)
        self.ix.load_index(os.path.join(path, "index.bin"))
        self.path = path

    def prepare(self, variant, p):
        self.ix.set_ef(max(p, 10))

    def search_batch(self, Q, k, variant, p):
        self.ix.set_ef(max(p, k))
        labels, _ = self.ix.knn_query(Q, k)
        return _rows(labels.astype(np.int64), k)

    def search_one(self, q, k, variant, p):
        labels, _ = self.ix.knn_query(q, k)
        return labels[0].tolist()

    def delete(self, rows, docs, data):
        for r in rows.tolist():
            self.ix.mark_deleted(r)
        self.ix.save_index(os.path.join(self.path, "index.bin"))
        fsync_tree(self.path)
