"""Where ragstore's query (and ingest) time goes, next to raw usearch on the same index.

    python benchmarks/profile_ragstore.py [--data .cache/bench/data/nN-qQ] [--expansion 64]
                                          [--oversample 4] [--no-rerank] [--ingest]

Uses the data prepared by bench_peers.py (run it first, with --keep-stores to reuse its
store; otherwise a ragstore store is built here). Prints per-query microseconds of
Store.query against raw usearch searched directly (same count and expansion, and
count=k) on an index built here the way the store builds its own (same metric, dtype,
connectivity and expansion_add) from the store's stored vectors (``Store.vectors``), a
cProfile of the query loop (one thread, one query per call) and, with --ingest, a
cProfile of add_many(vectors=) + close() into a fresh store.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import peers  # noqa: E402

BENCH = HERE.parent / ".cache" / "bench"

__all__ = ["main"]  # a script: main() is its door


def top(pr: cProfile.Profile, n: int, key: str) -> str:
    s = io.StringIO()
    pstats.Stats(pr, stream=s).strip_dirs().sort_stats(key).print_stats(n)
    return s.getvalue()


def raw_index(st, expansion_add: int = 128):
    """A usearch index like the store's, built from its stored vectors, all documents in one index.

    The store keeps one index per source; bench_peers.py's data has one source, so this is an
    index of the same kind over the same vectors (not the store's own graph, which is private:
    HNSW's random levels differ). ``expansion_add``: ragstore.open's default, which the store
    does not record.
    """
    from usearch.index import Index

    cfg = st.config
    parts = [st.vectors(d) for d in st.doc_ids()]
    X = np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros((0, cfg.dim)), dtype=np.float32)
    ix = Index(ndim=cfg.dim, metric=cfg.metric, dtype=cfg.index_dtype, connectivity=cfg.connectivity,
               expansion_add=expansion_add)
    t0 = time.perf_counter()
    ix.add(np.arange(len(X), dtype=np.uint64), X)
    print(f"raw usearch index: {len(X)} vectors from {len(parts)} documents of {len(st.sources())} source(s), "
          f"built in {time.perf_counter() - t0:.1f}s")
    return ix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--store", type=Path, default=BENCH / "stores" / "ragstore-f16")
    ap.add_argument("--expansion", type=int, default=64)
    ap.add_argument("--oversample", type=int, default=1, help="candidates re-scored per hit (the f16 default is 1)")
    ap.add_argument("--no-rerank", action="store_true")
    ap.add_argument("--ingest", action="store_true", help="also profile add_many + close into a temporary store")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    print("$ python " + " ".join(sys.argv), flush=True)
    print("load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    data_dir = a.data
    if data_dir is None:
        cands = sorted((BENCH / "data").glob("n*-q*"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise SystemExit("no prepared data: run benchmarks/bench_peers.py first")
        data_dir = cands[-1]
    data = peers.Data.load(str(data_dir))
    Q = np.load(data_dir / "queries.npy")
    print(f"data {data_dir} ({data.n} chunks), {len(Q)} queries")

    import ragstore

    if a.ingest or not (a.store / "data.mdb").exists():
        tmp = tempfile.mkdtemp(prefix="rs-prof-", dir=BENCH)
        path = os.path.join(tmp, "store")
        s = peers.make("ragstore-f16")
        _ = data.doc_texts
        pr = cProfile.Profile()
        t0 = time.perf_counter()
        pr.enable()
        s.build(path, data)
        pr.disable()
        t = time.perf_counter() - t0
        print(f"\n== ingest: {data.n} chunks in {t:.1f}s ({data.n / t:.0f} chunks/s, profiled)")
        print(top(pr, a.top, "cumulative"))
        if not (a.store / "data.mdb").exists():
            a.store = Path(path)
    st = ragstore.open(a.store, readonly=True)
    rerank = not a.no_rerank
    kw = dict(rerank=rerank, expansion=a.expansion, oversample=a.oversample)
    shard = raw_index(st)
    count = 10 * a.oversample if rerank else 10

    def per_query(fn) -> float:
        for q in Q[:50]:
            fn(q)
        t0 = time.perf_counter()
        for q in Q:
            fn(q)
        return (time.perf_counter() - t0) / len(Q) * 1e6

    shard.expansion_search = max(a.expansion, count)
    raw_count = per_query(lambda q: shard.search(q, count, threads=1))
    shard.expansion_search = a.expansion
    raw_k = per_query(lambda q: shard.search(q, 10, threads=1))
    rs = per_query(lambda q: st.query(q, 10, **kw))
    mode = f"rerank x{a.oversample}" if rerank else "no rerank"
    print(f"\n== query, one at a time, {mode}, expansion {a.expansion}")
    print(f"ragstore Store.query                         {rs:8.1f} us/query")
    print(f"raw usearch, same vectors, count={count:<3d} ef={max(a.expansion, count):<4d} {raw_count:8.1f} us/query")
    print(f"raw usearch, same vectors, count=10  ef={a.expansion:<4d} {raw_k:8.1f} us/query")
    print(f"ragstore overhead over the same search        {rs - raw_count:8.1f} us/query ({rs / raw_count:.2f}x)")
    pr = cProfile.Profile()
    pr.enable()
    for q in Q:
        st.query(q, 10, **kw)
    pr.disable()
    print(top(pr, a.top, "tottime"))
    t0 = time.perf_counter()
    st.query_many(Q, 10, **kw)
    tb = time.perf_counter() - t0
    shard.expansion_search = max(a.expansion, count)
    t0 = time.perf_counter()
    shard.search(Q, count)
    tr = time.perf_counter() - t0
    print(f"== batched query_many over {len(Q)} queries: {len(Q) / tb:,.0f} QPS; the usearch batch search inside "
          f"alone: {len(Q) / tr:,.0f} QPS")
    pr = cProfile.Profile()
    pr.enable()
    st.query_many(Q, 10, **kw)
    pr.disable()
    print(top(pr, 15, "tottime"))
    st.close()


if __name__ == "__main__":
    main()
