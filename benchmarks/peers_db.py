"""bench_peers.py's adapters for vector databases: Chroma, LanceDB, sqlite-vec.

These store the chunk texts with the vectors, as ragstore does.
"""

from __future__ import annotations

import os

import numpy as np

from peers_common import HNSW_EF_CONSTRUCTION, HNSW_M, System, _ver, fsync_tree

__all__ = ["Chroma", "LanceDB", "SqliteVec"]


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
        cfg = IvfPq(distance_type="cosine", num_partitions=parts, num_sub_vectors=self.pq_m)
        tbl.create_index("vector", config=cfg)
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
        for a, b in zip(qi.tolist(), ids.tolist(), strict=True):
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
