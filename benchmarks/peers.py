"""Adapters that put ragstore and its peers behind one small interface for bench_peers.py.

Every system gets the same vectors (MiniLM, L2-normalized, so cosine = inner
product) and, where it stores text, the same 64-token chunk texts. Each adapter:

- ``build(path, data)``: ingest everything and make it durable (what that
  means per system is in ``DURABLE``); the caller times it;
- ``open(path)``: load it for serving (what a fresh process does);
- ``variants``: {variant: [search parameter, ...]} swept from cheap to costly;
- ``search_batch(Q, k, variant, p)`` / ``search_one(q, k, variant, p)``: rows
  of the data (-1 where fewer than k came back);
- ``delete(rows, docs)``, ``reclaim()``: the delete experiment;
- ``single_thread()`` / ``all_threads()``: thread settings for latency vs QPS.

Rows are the chunk's index in the data arrays; each adapter maps its own ids.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
EF_SWEEP = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]


# --------------------------------------------------------------------------- data
@dataclass
class Data:
    X: np.ndarray  # (n, d) float32, unit rows
    chunk_doc: np.ndarray  # (n,) document index of each chunk
    positions: np.ndarray  # (n,) chunk position in its document
    doc_start: np.ndarray  # (n_docs + 1,) first row of each document
    doc_ids: list[str]
    folder: str

    _texts: list[str] | None = None
    _doc_texts: list[str] | None = None

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            with open(os.path.join(self.folder, "chunk_texts.json"), encoding="utf-8") as f:
                self._texts = json.load(f)
        return self._texts

    @property
    def doc_texts(self) -> list[str]:
        if self._doc_texts is None:
            with open(os.path.join(self.folder, "doc_texts.json"), encoding="utf-8") as f:
                self._doc_texts = json.load(f)
        return self._doc_texts

    @classmethod
    def load(cls, folder: str) -> Data:
        X = np.load(os.path.join(folder, "X.npy"), mmap_mode=None)
        chunk_doc = np.load(os.path.join(folder, "chunk_doc.npy"))
        positions = np.load(os.path.join(folder, "positions.npy"))
        with open(os.path.join(folder, "doc_ids.json"), encoding="utf-8") as f:
            doc_ids = json.load(f)
        doc_start = np.searchsorted(chunk_doc, np.arange(len(doc_ids) + 1)).astype(np.int64)
        return cls(X, chunk_doc, positions, doc_start, doc_ids, folder)


def fsync_tree(path: str) -> None:
    """fsync every file and folder under path (durability for systems without their own)."""
    paths = [path] if os.path.isfile(path) else []
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            paths += [os.path.join(root, f) for f in files]
            paths += [root]
    else:
        paths.append(os.path.dirname(path) or ".")
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def disk_bytes(path: str) -> int:
    """Bytes allocated on disk under path (like du)."""
    total = 0
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def _rows(arr: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(arr), k), -1, dtype=np.int64)
    out[:, : arr.shape[1]] = arr[:, :k]
    return out


# --------------------------------------------------------------------------- base
class System:
    name = ""
    label = ""
    family = ""
    durable = ""  # what the timed ingest includes
    stores_text = False
    max_queries: int | None = None  # slow systems: only this many queries are timed
    can_delete = True
    reload_to_prepare = False  # the search parameter is persisted: set it before a timed open
    reclaim_how = "n/a"
    variants: dict[str, list] = {}
    param_name = ""
    primary_variant = ""

    def __init__(self, threads: int = 0):
        self.threads = threads

    def versions(self) -> dict[str, str]:
        return {}

    def path_in(self, folder: str) -> str:
        return os.path.join(folder, self.name)

    def build(self, path: str, data: Data) -> dict:
        raise NotImplementedError

    def open(self, path: str, data: Data | None = None) -> None:
        raise NotImplementedError

    def search_batch(self, Q: np.ndarray, k: int, variant: str, p) -> np.ndarray:
        raise NotImplementedError

    def search_one(self, q: np.ndarray, k: int, variant: str, p) -> list[int]:
        raise NotImplementedError

    def prepare(self, variant: str, p) -> None:
        """Set the search parameter before timing (for systems where it is a setting)."""

    def delete(self, rows: np.ndarray, docs: np.ndarray, data: Data) -> None:
        raise NotImplementedError

    def reclaim(self) -> bool:
        return False

    def single_thread(self) -> None:
        pass

    def all_threads(self) -> None:
        pass

    def close(self) -> None:
        pass


def _ver(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


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
        _, I = self.ix.search(Q, k)
        return _rows(I.astype(np.int64), k)

    def search_one(self, q, k, variant, p):
        _, I = self.ix.search(q[None, :], k)
        return I[0].tolist()


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
        _, I = self.ix.search(Q, k)
        return _rows(I.astype(np.int64), k)

    def search_one(self, q, k, variant, p):
        _, I = self.ix.search(q[None, :], k)
        return I[0].tolist()

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


# --------------------------------------------------------------------------- chroma
class Chroma(System):
    name = "chroma"
    label = "Chroma (PersistentClient)"
    family = "chroma"
    stores_text = True
    durable = "collection.add (its SQLite commits) in max-size batches + fsync of every file"
    param_name = "ef_search"
    reload_to_prepare = True
    reclaim_how = "n/a (no vacuum in the Python API)"
    variants = {"": [16, 32, 64, 128, 256, 512]}
    primary_variant = ""

    def versions(self):
        return {"chromadb": _ver("chromadb")}

    def _client(self, path):
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))

    def build(self, path, data):
        client = self._client(path)
        col = client.create_collection(
            "bench",
            configuration={"hnsw": {"space": "cosine", "max_neighbors": HNSW_M,
                                    "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": 64}},
            embedding_function=None,
        )
        bs = client.get_max_batch_size()
        texts = data.texts
        for a in range(0, data.n, bs):
            b = min(data.n, a + bs)
            col.add(
                ids=[str(i) for i in range(a, b)],
                embeddings=data.X[a:b],
                documents=texts[a:b],
                metadatas=[{"doc": int(data.chunk_doc[i]), "pos": int(data.positions[i])} for i in range(a, b)],
            )
        fsync_tree(path)
        return {"batch": bs}

    def open(self, path, data=None):
        self.path = path
        self.client = self._client(path)
        self.col = self.client.get_collection("bench", embedding_function=None)
        self._ef = self.col.configuration["hnsw"]["ef_search"]

    def prepare(self, variant, p):
        # Chroma 1.x applies a modified ef_search only when the collection is loaded
        # again (checked: recall does not move in the same client), so reload it.
        if self._ef != p:
            self.col.modify(configuration={"hnsw": {"ef_search": p}})
            self.close()
            self.open(self.path)

    def _q(self, Q, k):
        r = self.col.query(query_embeddings=Q, n_results=k, include=["documents", "metadatas", "distances"])
        return r["ids"]

    def search_batch(self, Q, k, variant, p):
        self.prepare(variant, p)
        ids = self._q(Q, k)
        out = np.full((len(Q), k), -1, dtype=np.int64)
        for i, row in enumerate(ids):
            out[i, : len(row)] = [int(x) for x in row]
        return out

    def search_one(self, q, k, variant, p):
        return [int(x) for x in self._q(q[None, :], k)[0]]

    def delete(self, rows, docs, data):
        ds = [int(d) for d in docs]
        for a in range(0, len(ds), 1000):
            self.col.delete(where={"doc": {"$in": ds[a : a + 1000]}})

    def close(self):
        try:
            self.client.clear_system_cache()
        except Exception:
            pass


# --------------------------------------------------------------------------- lancedb
class LanceDB(System):
    name = "lancedb"
    family = "lancedb"
    stores_text = True
    param_name = "nprobes/refine_factor"
    reclaim_how = "table.optimize(cleanup_older_than=0)"
    variants = {"": [(10, None), (20, None), (20, 5), (40, 10), (80, 10), (160, 20)]}
    primary_variant = ""
    max_queries = 300
    pq_m = 48

    @property
    def label(self):
        return f"LanceDB (IVF-PQ{self.pq_m} + refine)"

    durable = "create_table (Lance files) + create_index IVF-PQ + fsync of every file"

    def versions(self):
        return {"lancedb": _ver("lancedb"), "pylance": _ver("pylance"), "pyarrow": _ver("pyarrow")}

    def build(self, path, data):
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        db = lancedb.connect(path)
        n, d = data.X.shape
        texts = data.texts

        def batches():
            for a in range(0, n, 20000):
                b = min(n, a + 20000)
                yield pa.record_batch({
                    "id": pa.array(np.arange(a, b, dtype=np.int64)),
                    "doc": pa.array(data.chunk_doc[a:b].astype(np.int64)),
                    "pos": pa.array(data.positions[a:b].astype(np.int32)),
                    "text": pa.array(texts[a:b], pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.X[a:b].ravel()), d),
                })

        schema = next(batches()).schema
        tbl = db.create_table("chunks", data=pa.RecordBatchReader.from_batches(schema, batches()))
        parts = int(max(16, round(np.sqrt(n))))
        tbl.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=parts, num_sub_vectors=self.pq_m))
        fsync_tree(path)
        return {"num_partitions": parts, "num_sub_vectors": self.pq_m}

    def open(self, path, data=None):
        import lancedb

        self.db = lancedb.connect(path)
        self.tbl = self.db.open_table("chunks")

    def _query(self, q, k, p):
        nprobes, refine = p
        b = self.tbl.search(q, vector_column_name="vector").distance_type("cosine").nprobes(nprobes)
        if refine:
            b = b.refine_factor(refine)
        return b.limit(k).select(["id", "doc", "pos", "text"])

    def search_batch(self, Q, k, variant, p):
        t = self._query([q for q in Q], k, p).to_arrow()
        out = np.full((len(Q), k), -1, dtype=np.int64)
        qi = t.column("query_index").to_numpy()
        ids = t.column("id").to_numpy()
        fill = np.zeros(len(Q), dtype=np.int64)
        for a, b in zip(qi.tolist(), ids.tolist()):
            if fill[a] < k:
                out[a, fill[a]] = b
                fill[a] += 1
        return out

    def search_one(self, q, k, variant, p):
        return self._query(q, k, p).to_arrow().column("id").to_pylist()

    def delete(self, rows, docs, data):
        ds = [int(d) for d in docs]
        for a in range(0, len(ds), 2000):
            self.tbl.delete("doc IN (" + ",".join(map(str, ds[a : a + 2000])) + ")")

    def reclaim(self):
        from datetime import timedelta

        self.tbl.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
        return True


# --------------------------------------------------------------------------- sqlite-vec
def _sqlite():
    try:
        import pysqlite3 as sqlite3  # the stdlib build here cannot load extensions
    except ImportError:
        import sqlite3
    return sqlite3


class SqliteVec(System):
    name = "sqlite-vec"
    label = "sqlite-vec (vec0, brute force)"
    family = "sqlite-vec"
    stores_text = True
    durable = "one transaction of INSERTs (chunks table + vec0 table), COMMIT (synchronous=FULL)"
    param_name = "-"
    reclaim_how = "VACUUM"
    variants = {"": [None]}
    primary_variant = ""
    max_queries = 200

    def versions(self):
        sqlite3 = _sqlite()
        return {"sqlite-vec": _ver("sqlite-vec"), "sqlite": sqlite3.sqlite_version,
                "pysqlite3-binary": _ver("pysqlite3-binary")}

    def _connect(self, path):
        sqlite3 = _sqlite()
        import sqlite_vec

        con = sqlite3.connect(os.path.join(path, "vec.db"))
        con.enable_load_extension(True)
        sqlite_vec.load(con)
        con.enable_load_extension(False)
        return con

    def build(self, path, data):
        os.makedirs(path, exist_ok=True)
        con = self._connect(path)
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE chunks(id INTEGER PRIMARY KEY, doc INTEGER, pos INTEGER, text TEXT)")
        con.execute("CREATE INDEX chunks_doc ON chunks(doc)")
        con.execute(f"CREATE VIRTUAL TABLE vec USING vec0(embedding float[{data.dim}] distance_metric=cosine)")
        texts = data.texts
        with con:
            con.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?)",
                ((i + 1, int(data.chunk_doc[i]), int(data.positions[i]), texts[i]) for i in range(data.n)),
            )
            con.executemany(
                "INSERT INTO vec(rowid, embedding) VALUES (?, ?)",
                ((i + 1, data.X[i].tobytes()) for i in range(data.n)),
            )
        con.close()
        return {}

    def open(self, path, data=None):
        self.con = self._connect(path)

    SQL = (
        "SELECT v.rowid, v.distance, c.text FROM "
        "(SELECT rowid, distance FROM vec WHERE embedding MATCH ? AND k = ?) v "
        "JOIN chunks c ON c.id = v.rowid ORDER BY v.distance"
    )

    def search_one(self, q, k, variant, p):
        return [r[0] - 1 for r in self.con.execute(self.SQL, (np.asarray(q, np.float32).tobytes(), k))]

    def search_batch(self, Q, k, variant, p):
        out = np.full((len(Q), k), -1, dtype=np.int64)
        for i, q in enumerate(Q):
            r = self.search_one(q, k, variant, p)
            out[i, : len(r)] = r
        return out

    def delete(self, rows, docs, data):
        with self.con:
            ids = [(int(r) + 1,) for r in rows]
            self.con.executemany("DELETE FROM vec WHERE rowid = ?", ids)
            self.con.executemany("DELETE FROM chunks WHERE id = ?", ids)

    def reclaim(self):
        self.con.execute("VACUUM")
        return True

    def close(self):
        self.con.close()


# --------------------------------------------------------------------------- registry
def make(name: str, threads: int = 0) -> System:
    table = {
        "ragstore-f16": lambda: Ragstore("f16", threads),
        "ragstore-i8": lambda: Ragstore("i8", threads),
        "ragstore-f32": lambda: Ragstore("f32", threads),
        "usearch-f16": lambda: USearch("f16", threads),
        "usearch-f32": lambda: USearch("f32", threads),
        "faiss-hnsw": lambda: FaissHNSW(threads),
        "faiss-ivfpq": lambda: FaissIVFPQ(threads),
        "hnswlib": lambda: Hnswlib(threads),
        "chroma": lambda: Chroma(threads),
        "lancedb": lambda: LanceDB(threads),
        "sqlite-vec": lambda: SqliteVec(threads),
    }
    if name not in table:
        raise SystemExit(f"unknown system {name!r}; choose from {', '.join(table)}")
    return table[name]()


ALL = [
    "ragstore-f16", "ragstore-i8", "ragstore-f32", "usearch-f16", "usearch-f32", "faiss-hnsw", "faiss-ivfpq",
    "hnswlib", "chroma", "lancedb", "sqlite-vec",
]
# the quick run: ragstore's default configuration against every peer (i8 and f32 stores on request)
DEFAULT = [
    "ragstore-f16", "usearch-f16", "usearch-f32", "faiss-hnsw", "faiss-ivfpq", "hnswlib", "chroma", "lancedb",
    "sqlite-vec",
]


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)
