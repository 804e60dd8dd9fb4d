"""Ingest with the store's embedder against embedding the same chunks alone.

    python benchmarks/bench_ingest.py [--docs 400] [--embedder minilm-int8] [--rounds 2]

The same Wikipedia documents (the first ``--docs`` of wiki-AA) are, in each
round and in this order:

- embedded alone: ``embedder.encode`` over the texts of every chunk, in
  slices of ``--batch-size`` chunks (what ingest hands the embedder);
- ingested, pipelined (the default): ``add_many`` into a fresh store
  (chunking, embedding, LMDB commits fsynced, HNSW inserts, checkpoint);
- ingested, sequential: the same with every batch committed before the next
  is embedded (the code before the pipeline, kept here by patching
  ``IngestRun._flush`` for the measurement only).

With ``--precomputed`` the documents carry their vectors (computed once
before the rounds): ingest is then chunking, LMDB and the index only, and the
embedding-alone figure is not measured.

Reported: the command, the machine and its load, each figure's best round
(chunks/s) and the ratios ingest / embedding alone (the goal: ingest time
~= embedding time) and pipelined / sequential.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

import ragstore  # noqa: E402
from ragstore.embedders import resolve  # noqa: E402
from ragstore.engine import ingest as ingest_mod  # noqa: E402

WIKI = REPO.parent / "shared" / "data" / "wiki" / "wiki-AA.jsonl.gz"


def read_docs(n: int) -> list[dict]:
    out = []
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["text"].strip():
                out.append({"id": d["id"], "text": d["text"]})
            if len(out) >= n:
                break
    return out


def ingest(docs: list[dict], embedder, batch_size: int, folder: str, *, sequential: bool) -> tuple[float, int]:
    path = os.path.join(folder, "s")
    shutil.rmtree(path, ignore_errors=True)
    real = ingest_mod.IngestRun._flush
    if sequential:
        ingest_mod.IngestRun._flush = lambda self, last=False: real(self, last=True)  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        with ragstore.open(path, embedder=embedder) as st:
            s = st.add_many(docs, batch_size=batch_size)
        return time.perf_counter() - t, s.chunks
    finally:
        ingest_mod.IngestRun._flush = real  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=400, help="wiki-AA documents (default 400, ~3,000 chunks)")
    ap.add_argument("--embedder", default="minilm-int8", help="embedder spec (default minilm-int8)")
    ap.add_argument("--batch-size", type=int, default=256, help="add_many batch_size (default 256, its own)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the best of each figure is reported")
    ap.add_argument("--precomputed", action="store_true", help="documents carry their vectors (no embedding)")
    ap.add_argument("--out", help="JSON result file")
    a = ap.parse_args()
    print("command: python " + shlex.join(["benchmarks/bench_ingest.py", *sys.argv[1:]]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    docs = read_docs(a.docs)
    emb = resolve(a.embedder)
    folder = tempfile.mkdtemp(prefix="ragstore-bench-ingest-")
    try:
        with ragstore.open(os.path.join(folder, "chunker"), embedder=emb) as st:
            per_doc = [[c.text for c in st.chunk(d["text"])] for d in docs]
        texts = [t for ts in per_doc for t in ts]
        emb.encode(texts[:64])  # warm: model loaded, threads started
        if a.precomputed:
            docs = [dict(d, vectors=emb.encode(ts)) for d, ts in zip(docs, per_doc, strict=True)]
        print(f"data: {len(docs)} documents, {len(texts)} chunks; embedder {a.embedder}; batch_size {a.batch_size}")
        best = {"embed": float("inf"), "pipelined": float("inf"), "sequential": float("inf")}
        loads = []
        for r in range(a.rounds):
            if not a.precomputed:
                t = time.perf_counter()
                for i in range(0, len(texts), a.batch_size):
                    emb.encode(texts[i : i + a.batch_size])
                best["embed"] = min(best["embed"], time.perf_counter() - t)
            for mode in ("pipelined", "sequential"):
                dt, n = ingest(docs, emb, a.batch_size, folder, sequential=mode == "sequential")
                assert n == len(texts), (n, len(texts))
                best[mode] = min(best[mode], dt)
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1}: " + ", ".join(f"{k} {len(texts) / v:.1f} chunks/s" for k, v in best.items()
                                                 if v != float("inf"))
                  + f" (best so far); load {loads[-1]:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = len(texts)
    if a.precomputed:
        best["embed"] = float("nan")
    res = {k: n / v for k, v in best.items()}
    if not a.precomputed:
        print(f"embedding alone: {res['embed']:.1f} chunks/s ({best['embed']:.2f} s)")
    for mode in ("pipelined", "sequential"):
        ratio = "" if a.precomputed else f"; ingest time / embedding time = {best[mode] / best['embed']:.2f}"
        print(f"ingest, {mode}: {res[mode]:.1f} chunks/s ({best[mode]:.2f} s){ratio}")
    print(f"pipelined / sequential speed: {best['sequential'] / best['pipelined']:.2f}x; "
          f"load during the rounds {min(loads):.2f}-{max(loads):.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"chunks": n, "seconds": best, "chunks_per_s": res, "load": loads}))


if __name__ == "__main__":
    main()
