"""Embed Wikipedia chunks once with ragstore's default embedder, cache them, reuse.

    python benchmarks/embed_cache.py --chunks 100000 [--cache .cache/wiki-minilm]

Documents are read in file order from ../shared/data/wiki/*.jsonl.gz, cut into
the same 64-token chunks a store makes (same tokenizer, same Chunker), and
embedded with MiniLM. The cache is a folder of parts, each whole documents:
``part-NNNNN.npz`` with ``vectors`` (float32, n x 384), ``doc`` (index of the
document in file order) and ``position``. Running again with a larger
``--chunks`` appends parts; an interrupted run loses at most the part in
progress. ``load(cache, n_chunks)`` gives documents with their vectors.

``--from-store PATH`` reuses the vectors of a store that ingested the same files
with the default embedder (e.g. ``ragstore ingest S wiki-AA.jsonl.gz``): a
document whose chunks in that store are exactly the chunks cut here takes the
stored float32 vectors instead of being embedded again; any other is embedded.
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

__all__ = ["build", "load", "cached_state", "main"]  # bench_peers_data.py uses load and cached_state


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


def _stored_vectors(store, doc_id: str, chunks) -> np.ndarray | None:
    """The store's vectors of a document whose stored chunks are exactly ``chunks``."""
    from ragstore.errors import NotFoundError

    try:
        doc = store.get(doc_id)
    except NotFoundError:
        return None
    if doc.n_chunks != len(chunks):
        return None
    for c in chunks:
        if store.get_chunk(doc.first_chunk_id + c.position).text != c.text:
            return None
    return np.asarray(store.vectors(doc_id), dtype=np.float32)  # (n_chunks, dim), in chunk order


def build(cache: Path, target: int, from_store: Path | None = None) -> None:
    import ragstore
    from ragstore.embedders.minilm import MiniLM
    from ragstore.engine.chunking import Chunker

    cache.mkdir(parents=True, exist_ok=True)
    have, next_doc = cached_state(cache)
    print(f"cache {cache}: {have} chunks of {next_doc} documents; target {target}", flush=True)
    if have >= target:
        return
    model = MiniLM()
    chunker = Chunker(model.tokenizer_json(), 64)
    store = None
    if from_store is not None:
        store = ragstore.open(from_store, readonly=True)
        if store.config.embedder != "minilm" or store.config.chunk_tokens != 64:
            raise SystemExit(f"{from_store} was not made with the default embedder and 64-token chunks")
    reused = 0
    stream = itertools.islice(wiki_docs(), next_doc, None)
    doc_i = next_doc
    t0 = time.perf_counter()
    done = 0
    while have < target:
        texts, docs, pos, known = [], [], [], {}
        for d in stream:
            chunks = chunker.chunk(d["text"]).chunks
            if store is not None:
                v = _stored_vectors(store, d["id"], chunks)
                if v is not None:
                    known[len(texts)] = v
            for c in chunks:
                texts.append(c.text)
                docs.append(doc_i)
                pos.append(c.position)
            doc_i += 1
            if len(texts) >= PART_CHUNKS:
                break
        if not texts:
            break
        vecs = np.empty((len(texts), 384), dtype=np.float32)
        filled = np.zeros(len(texts), dtype=bool)
        for start, v in known.items():
            vecs[start : start + len(v)] = v
            filled[start : start + len(v)] = True
        todo = np.flatnonzero(~filled)
        if len(todo):
            vecs[todo] = model.encode([texts[i] for i in todo])
        reused += int(filled.sum())
        name = cache / f"part-{len(parts(cache)):05d}.npz"
        tmp = name.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=vecs.astype(np.float32), doc=np.array(docs, np.int32), position=np.array(pos, np.int32))
        os.replace(tmp, name)  # whole parts only: an interrupted run resumes cleanly
        have += len(texts)
        done += len(texts)
        rate = done / (time.perf_counter() - t0)
        reuse = f"; {reused} taken from {from_store}" if store else ""
        print(f"{have} chunks cached ({rate:.0f} chunks/s{reuse})", flush=True)
    if store is not None:
        store.close()


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
    ap.add_argument("--from-store", type=Path, default=None,
                    help="reuse vectors of a store that ingested the same documents")
    a = ap.parse_args()
    print("$ python " + " ".join(sys.argv), flush=True)
    build(a.cache, a.chunks, a.from_store)


if __name__ == "__main__":
    main()
