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

# The adapters live in one module per family; their names are importable from here.
from peers_ann import FaissHNSW, FaissIVFPQ, Hnswlib, USearch
from peers_common import (
    EF_SWEEP,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    Data,
    System,
    disk_bytes,
    fsync_tree,
    remove,
)
from peers_db import Chroma, LanceDB, SqliteVec
from peers_db import _sqlite as _sqlite
from peers_ragstore import Ragstore

__all__ = [
    "HNSW_M",
    "HNSW_EF_CONSTRUCTION",
    "EF_SWEEP",
    "Data",
    "System",
    "fsync_tree",
    "disk_bytes",
    "remove",
    "Ragstore",
    "USearch",
    "FaissHNSW",
    "FaissIVFPQ",
    "Hnswlib",
    "Chroma",
    "LanceDB",
    "SqliteVec",
    "make",
    "ALL",
    "DEFAULT",
]


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
