"""bench_peers.py's worker subprocesses: build and sweep, serve cold, delete.

Each runs in a fresh process (``bench_peers.py --worker KIND``) so that
memory, cold start and thread settings of one system never leak into the
next; each returns a dict that bench_peers.py stores in the result JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import peers
from bench_peers_data import HERE, TARGETS, K, exact_topk, log, proc_status, recall_at_k, recall_ids

__all__ = [
    "worker_build",
    "worker_serve",
    "worker_delete",
    "IMPORTS",
]


# =========================================================================== workers
def _load_eval(folder: Path):
    return np.load(folder / "queries.npy"), np.load(folder / "gt.npy")


def worker_build(a) -> dict:
    folder = Path(a.data)
    data = peers.Data.load(str(folder))
    Q, gt = _load_eval(folder)
    s = peers.make(a.system, a.threads)
    path = s.path_in(a.stores)
    peers.remove(path)
    os.makedirs(a.stores, exist_ok=True)
    if s.stores_text:  # read the texts before the clock starts
        _ = data.doc_texts if s.family == "ragstore" else data.texts
    res: dict = {"system": s.name, "label": s.label, "versions": s.versions(), "durable": s.durable,
                 "param_name": s.param_name, "primary_variant": s.primary_variant}
    res["load_before_build"] = os.getloadavg()
    t0 = time.perf_counter()
    res["build_info"] = s.build(path, data)
    t = time.perf_counter() - t0
    res["ingest_s"] = t
    res["ingest_chunks_per_s"] = data.n / t
    res["disk_bytes"] = peers.disk_bytes(path)
    log(f"  {s.name}: ingest {data.n} chunks in {t:.1f}s = {data.n / t:.0f}/s, "
        f"disk {res['disk_bytes'] / 2**20:.1f} MiB")
    del s
    s = peers.make(a.system, a.threads)
    s.open(path, data)
    nq = min(len(Q), s.max_queries or len(Q))
    Qn, gtn = Q[:nq], gt[:nq]
    res["queries_timed"] = nq
    res["load_before_sweep"] = os.getloadavg()
    sweep = []
    for variant, params in s.variants.items():
        for p in params:
            s.all_threads()
            s.prepare(variant, p)
            times = []
            for _ in range(2):  # the second run only when the first was short
                t0 = time.perf_counter()
                R = s.search_batch(Qn, K, variant, p)
                times.append(time.perf_counter() - t0)
                if times[0] > 3.0:
                    break
            rec = recall_at_k(R, gtn, Qn, data.X)
            s.single_thread()
            s.prepare(variant, p)
            lat = []
            for q in Qn:
                t0 = time.perf_counter()
                s.search_one(q, K, variant, p)
                lat.append(time.perf_counter() - t0)
            lat = np.asarray(lat) * 1e3
            pt = {"variant": variant, "param": p, "recall": rec, "recall_ids": recall_ids(R, gtn),
                  "qps": nq / min(times),
                  "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                  "mean_ms": float(lat.mean())}
            sweep.append(pt)
            log(f"    {variant or '-':10s} {s.param_name}={p}: recall@10 {rec:.4f}  {pt['qps']:8.0f} QPS  "
                f"p50 {pt['p50_ms']:.3f} ms  p99 {pt['p99_ms']:.3f} ms")
            if rec >= TARGETS[-1]:  # the highest target is reached: costlier settings tell nothing new
                break
    s.all_threads()
    s.close()
    res["sweep"] = sweep
    res["load_after_sweep"] = os.getloadavg()
    return res


IMPORTS = {
    "ragstore": "import ragstore",
    "usearch": "from usearch.index import Index",
    "faiss": "import faiss",
    "hnswlib": "import hnswlib",
    "chroma": "import chromadb",
    "lancedb": "import lancedb, pyarrow",
    "sqlite-vec": "import sqlite_vec; peers._sqlite()",
}


def worker_serve(a) -> dict:
    """Fresh process: open the store, answer the first query (cold start), serve the rest; RSS delta."""
    folder = Path(a.data)
    Q = np.load(folder / "queries.npy")
    variant, p = json.loads(a.variant), json.loads(a.param)
    if isinstance(p, list):
        p = tuple(p)
    s = peers.make(a.system, a.threads)
    path = s.path_in(a.stores)
    if s.reload_to_prepare:  # persist the setting first, in a process of its own
        code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import peers; "
                f"s = peers.make({a.system!r}); s.open({path!r}); "
                f"s.prepare(json.loads({a.variant!r}), json.loads({a.param!r})); s.close()")
        subprocess.run([sys.executable, "-c", code], check=True)
    st0 = proc_status()
    t0 = time.perf_counter()
    exec(IMPORTS[s.family], {"peers": peers})
    t_import = time.perf_counter() - t0
    st1 = proc_status()
    t0 = time.perf_counter()
    s.open(path)
    t_open = time.perf_counter() - t0
    s.single_thread()
    s.prepare(variant, p)
    s.search_one(Q[0], K, variant, p)
    t_first = time.perf_counter() - t0
    nq = min(len(Q), s.max_queries or len(Q))
    t1 = time.perf_counter()
    for q in Q[:nq]:
        s.search_one(q, K, variant, p)
    t_serve = time.perf_counter() - t1
    st2 = proc_status()
    s.close()
    return {
        "import_s": t_import, "open_s": t_open, "open_first_query_s": t_first,
        "served_queries": nq, "serve_s": t_serve,
        "rss_base": st1, "rss_serving": st2, "rss_before_import": st0,
        "rss_delta": st2["VmRSS"] - st1["VmRSS"],
        "anon_delta": st2.get("RssAnon", 0) - st1.get("RssAnon", 0),
        "file_delta": st2.get("RssFile", 0) - st1.get("RssFile", 0),
        "variant": variant, "param": p,
    }


def worker_delete(a) -> dict:
    folder = Path(a.data)
    data = peers.Data.load(str(folder))
    Q, _gt = _load_eval(folder)
    variant, p = json.loads(a.variant), json.loads(a.param)
    if isinstance(p, list):
        p = tuple(p)
    s = peers.make(a.system, a.threads)
    path = s.path_in(a.stores)
    kw = {"readonly": False} if s.family == "ragstore" else {}
    s.open(path, data, **kw)
    n_docs = len(data.doc_ids)
    rng = np.random.default_rng(1)
    docs = np.sort(rng.choice(n_docs, n_docs // 10, replace=False))
    rows = np.concatenate([np.arange(data.doc_start[d], data.doc_start[d + 1]) for d in docs])
    deleted = np.zeros(data.n, dtype=bool)
    deleted[rows] = True
    nq = min(len(Q), s.max_queries or len(Q))
    Qn = Q[:nq]
    gt2 = exact_topk(data.X, Qn, K, deleted)
    res = {"docs_deleted": int(len(docs)), "chunks_deleted": int(len(rows)), "disk_before": peers.disk_bytes(path)}
    s.all_threads()
    s.prepare(variant, p)
    res["recall_before"] = recall_at_k(s.search_batch(Qn, K, variant, p), exact_topk(data.X, Qn, K), Qn, data.X)
    t0 = time.perf_counter()
    s.delete(rows, docs, data)
    res["delete_s"] = time.perf_counter() - t0
    res["disk_after_delete"] = peers.disk_bytes(path)
    R = s.search_batch(Qn, K, variant, p)
    res["recall_after_delete"] = recall_at_k(R, gt2, Qn, data.X)
    res["deleted_returned"] = int(np.isin(R, rows).sum())
    res["reclaim_how"] = s.reclaim_how
    t0 = time.perf_counter()
    did = s.reclaim()
    if did:
        res["reclaim_s"] = time.perf_counter() - t0
        res["disk_after_reclaim"] = peers.disk_bytes(path)
        s.prepare(variant, p)
        res["recall_after_reclaim"] = recall_at_k(s.search_batch(Qn, K, variant, p), gt2, Qn, data.X)
    s.close()
    res["disk_after_close"] = peers.disk_bytes(path)
    return res
