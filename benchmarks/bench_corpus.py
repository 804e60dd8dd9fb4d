"""retrieve_corpus throughput: RETRO training neighbours for every chunk of a corpus.

    python benchmarks/bench_corpus.py [--store-docs 3000] [--train-docs 3000] [--embedder test-hash]

A store of the first ``--store-docs`` wiki-AA articles, then the neighbours
(k=2, own document excluded) of every 64-token chunk (MiniLM's tokenizer as
the LM's) of ``--train-docs`` wiki-AB articles, into memory-mapped arrays.
The default embedder is ragstore's HashEmbedder, so the figure is the
datastore's part (search, hits, token arrays, fsync'd appends); with
``--embedder minilm-int8`` query embedding is included (~170 chunks/s here).
Prints the command, the machine, the load and chunks/s.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ragstore  # noqa: E402
from ragstore.embedders import resolve  # noqa: E402
from ragstore.retrieval.corpus import retrieve_corpus  # noqa: E402
from ragstore.testing import HashEmbedder  # noqa: E402

WIKI = REPO.parent / "shared" / "data" / "wiki"


def docs(file: str, n: int) -> list[dict]:
    with gzip.open(WIKI / file, "rt", encoding="utf-8") as f:
        rows = map(json.loads, itertools.islice(f, n))
        return [{"id": d["id"], "text": d["text"]} for d in rows if d["text"].strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store-docs", type=int, default=3000)
    ap.add_argument("--train-docs", type=int, default=3000)
    ap.add_argument("--embedder", default="test-hash", help="test-hash (HashEmbedder, 384-d) or a spec")
    ap.add_argument("--k", type=int, default=2)
    a = ap.parse_args()
    print("command: python " + shlex.join(["benchmarks/bench_corpus.py", *sys.argv[1:]]))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    emb = HashEmbedder(dim=384) if a.embedder == "test-hash" else resolve(a.embedder)
    tok = resolve("minilm").tokenizer_json()
    with tempfile.TemporaryDirectory(prefix="ragstore-bench-corpus-") as tmp:
        with ragstore.open(os.path.join(tmp, "s"), embedder=emb) as st:
            st.add_many(docs("wiki-AA.jsonl.gz", a.store_docs), batch_size=1024)
            print(f"store: {st.stats().chunks} chunks of {len(st)} documents")
            train = docs("wiki-AB.jsonl.gz", a.train_docs)
            t = time.perf_counter()
            res = retrieve_corpus(st, train, os.path.join(tmp, "out"), tokenizer=tok, k=a.k)
            dt = time.perf_counter() - t
    print(f"retrieve_corpus: {len(res)} training chunks of {len(res.doc_ids)} documents, k={a.k}, "
          f"in {dt:.1f} s: {len(res) / dt:.0f} chunks/s; load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
