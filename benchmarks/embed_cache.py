"""Embed Wikipedia chunks once with ragstore's default embedder, cache them, reuse.

    python benchmarks/embed_cache.py --chunks 100000 [--cache .cache/wiki-minilm]

Documents are read in file order from ../shared/data/wiki/*.jsonl.gz, cut into
the same 64-token chunks a store makes (same tokenizer, same Chunker), and
embedded with MiniLM. The cache is a folder of parts, each whole documents:
``part-NNNNN.npz`` with ``vectors`` (float32, n x 384), ``doc`` (index of the
document in file order) and ``position``. Running again with a larger
``--chunks`` appends parts; an interrupted run loses at most the part in
progress. ``load(cache, n_chunks)`` gives documents with their vectors.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wiki"
DEFAULT_CACHE = REPO / ".cache" / "wiki-minilm"
PART_CHUNKS = 2_000


def wiki_docs():
    """All wiki documents in a fixed order (file by file, line by line)."""
    for f in sorted(WIKI.glob("wiki-*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                if d["text"].strip():
                    yield d


def parts(cache: Path) -> list[Path]:
    return sorted(cache.glob("part-*.npz"))


def cached_state(cache: Path) -> tuple[int, int]:
    """(chunks cached, documents cached)."""
    n = docs = 0
    for p in parts(cache):
        with np.load(p) as z:
            n += len(z["doc"])
            docs = int(z["doc"][-1]) + 1
    return n, docs


def build(cache: Path, target: int) -> None:
    from ragstore.chunking import Chunker
    from ragstore.minilm import MiniLM

    cache.mkdir(parents=True, exist_ok=True)
    have, next_doc = cached_state(cache)
    print(f"cache {cache}: {have} chunks of {next_doc} documents; target {target}", flush=True)
    if have >= target:
        return
    model = MiniLM()
    chunker = Chunker(model.tokenizer_json(), 64)
    stream = itertools.islice(wiki_docs(), next_doc, None)
    doc_i = next_doc
    t0 = time.perf_counter()
    done = 0
    while have < target:
        texts, docs, pos = [], [], []
        for d in stream:
            for c in chunker.chunk(d["text"]).chunks:
                texts.append(c.text)
                docs.append(doc_i)
                pos.append(c.position)
            doc_i += 1
            if len(texts) >= PART_CHUNKS:
                break
        if not texts:
            break
        vecs = model.encode(texts)
        name = cache / f"part-{len(parts(cache)):05d}.npz"
        tmp = name.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=vecs.astype(np.float32), doc=np.array(docs, np.int32), position=np.array(pos, np.int32))
        os.replace(tmp, name)  # whole parts only: an interrupted run resumes cleanly
        have += len(texts)
        done += len(texts)
        rate = done / (time.perf_counter() - t0)
        print(f"{have} chunks cached ({rate:.0f} chunks/s)", flush=True)


def load(cache: Path = DEFAULT_CACHE, n_chunks: int | None = None):
    """[(doc dict, vectors)] for whole documents, up to about n_chunks chunks."""
    vec_parts, doc_parts = [], []
    total = 0
    for p in parts(cache):
        with np.load(p) as z:
            vec_parts.append(z["vectors"])
            doc_parts.append(z["doc"])
        total += len(doc_parts[-1])
        if n_chunks is not None and total >= n_chunks:
            break
    if not vec_parts:
        raise SystemExit(f"no cached vectors in {cache}: run python benchmarks/embed_cache.py --chunks N first")
    vectors = np.concatenate(vec_parts)
    doc_idx = np.concatenate(doc_parts)
    if n_chunks is not None and len(doc_idx) > n_chunks:
        last_doc = doc_idx[n_chunks - 1]
        cut = int(np.searchsorted(doc_idx, last_doc, side="right"))
        vectors, doc_idx = vectors[:cut], doc_idx[:cut]
    n_docs = int(doc_idx[-1]) + 1
    bounds = np.searchsorted(doc_idx, np.arange(n_docs + 1))
    out = []
    for i, d in enumerate(itertools.islice(wiki_docs(), n_docs)):
        out.append((d, vectors[bounds[i] : bounds[i + 1]]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000, help="cache at least this many chunks")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = ap.parse_args()
    print("$ python " + " ".join(sys.argv), flush=True)
    build(a.cache, a.chunks)


if __name__ == "__main__":
    main()
