"""Index inserts on all cores, repaired: every vector stays reachable.

usearch's parallel insertion was measured to leave nodes no search reaches
(9 of 20K); VectorIndex inserts large batches on all cores, searches each
added vector and re-inserts those its own search misses. A search for its own
vector must then find every key as after a serial build: HNSW itself (serial)
leaves a handful of nodes of tight clusters unfindable (3 of these 20K even at
expansion 512, top 100); the parallel build may leave no more than it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragstore.engine import index as index_mod
from ragstore.engine.index import VectorIndex


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters: the hard case for HNSW links (no exact duplicates)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(1, n // 200), dim)).astype(np.float32)
    v = centers[rng.integers(0, len(centers), n)] + 0.15 * rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(tmp_path, vecs: np.ndarray, threads: int, batch: int = 2048) -> VectorIndex:
    ix = VectorIndex(str(tmp_path / f"ix{threads}"), dim=vecs.shape[1], metric="cos", dtype="f16",
                     connectivity=16, expansion_add=128, expansion_search=64, threads=threads)
    keys = np.arange(1, len(vecs) + 1, dtype=np.uint64)
    for i in range(0, len(vecs), batch):
        ix.add("", keys[i : i + batch], vecs[i : i + batch])
    return ix


def unreachable(ix: VectorIndex, vecs: np.ndarray) -> int:
    """Keys that a wide search (expansion 512, top 100) for their own vector does not find."""
    shard = ix.shards[""]
    keys = np.arange(1, len(vecs) + 1, dtype=np.uint64)
    shard.expansion_search = 512
    m = shard.search(vecs, 100, threads=0)
    return int((~(np.asarray(m.keys) == keys[:, None]).any(axis=1)).sum())


def self_recall_at_10(ix: VectorIndex, vecs: np.ndarray) -> float:
    shard = ix.shards[""]
    keys = np.arange(1, len(vecs) + 1, dtype=np.uint64)
    m = shard.search(vecs, 10, threads=0)
    return float((np.asarray(m.keys) == keys[:, None]).any(axis=1).mean())


def check_build(tmp_path, n: int) -> None:
    vecs = clustered(n)
    par = build(tmp_path, vecs, threads=0)
    ser = build(tmp_path, vecs, threads=1)
    assert len(par) == len(ser) == n and ser.repaired == 0
    assert unreachable(par, vecs) <= max(unreachable(ser, vecs), n // 5000)
    # the repaired parallel graph answers its own vectors as well as a serial one
    assert self_recall_at_10(par, vecs) >= self_recall_at_10(ser, vecs) - 0.002


def test_parallel_build_leaves_no_node_unreachable(tmp_path):
    check_build(tmp_path, 20_000)


@pytest.mark.slow
def test_parallel_build_of_100k_vectors_every_key_reachable(tmp_path):
    check_build(tmp_path, 100_000)


def test_small_batches_are_inserted_serially(tmp_path, monkeypatch):
    calls = []
    vecs = clustered(index_mod.PARALLEL_MIN - 1)
    ix = build(tmp_path, vecs, threads=0, batch=len(vecs))
    real = type(ix.shards[""]).add

    def spy(self, keys, vectors, *args, threads=0, **kw):
        calls.append(threads)
        return real(self, keys, vectors, *args, threads=threads, **kw)

    monkeypatch.setattr(type(ix.shards[""]), "add", spy)
    ix.add("", np.array([10**6], dtype=np.uint64), vecs[:1])
    assert calls == [1]
