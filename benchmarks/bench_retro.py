"""Time retrieve_sequence: the neighbours of a 2,048-token input (RETRO's setting).

    python benchmarks/bench_retro.py [--chunks 100000] [--k 2] [--tokens 2048]

The store holds real Wikipedia text (shared/data/wiki, in file order) embedded
with an embedder (default: ragstore.testing.HashEmbedder, the tests' bag-of-words hash of
dimension 32, because embedding 100K chunks with MiniLM takes ~17 minutes at
~100 chunks/s; pass --embedder minilm for the real model). The store is built
once under .cache/bench/ and reused (--rebuild to make it again). Inputs are
consecutive 2,048-token windows of WikiText-2 valid, never in the store.

Reported: time per retrieve_sequence call (split + embed + batched search of
all chunks + hit resolution), and its parts measured separately. With
--embedder hash, the query-side cost of MiniLM embedding the same chunks is
measured too (MiniLM would dominate a real deployment's latency).
JSON goes to .cache/bench/bench_retro-<embedder>-<chunks>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import ragstore  # noqa: E402
from ragstore import retro  # noqa: E402

__all__ = ["main"]  # a script: main() is its door


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    import usearch

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(mem, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "usearch": usearch.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def wiki_stream():
    for f in sorted((DATA / "wiki").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def make_embedder(name: str):
    if name == "hash":
        from ragstore.testing import HashEmbedder

        return HashEmbedder()
    return name  # a ragstore spec such as "minilm"


def build(path: Path, n_chunks: int, embedder_name: str) -> tuple[float, int]:
    store = ragstore.open(path, embedder=make_embedder(embedder_name), sync=False)
    done = {"chunks": store.stats().chunks}
    t0 = time.perf_counter()

    def docs():
        for d in wiki_stream():
            if done["chunks"] >= n_chunks:
                return
            yield ragstore.Doc(d["id"], d["text"], d["source"], {"title": d["title"]})

    def progress(p):
        done["chunks"] = start + p.chunks
        if p.chunks % 10_000 < 1000:
            print(f"  ingested {done['chunks']:,} chunks ({p.chunks / max(p.seconds, 1e-9):,.0f}/s)", flush=True)

    start = done["chunks"]
    if start < n_chunks:
        store.add_many(docs(), replace=True, batch_size=1000, on_progress=progress)
    store.checkpoint()
    n = store.stats().chunks
    store.close()
    return time.perf_counter() - t0, n


def inputs(store, n_tokens: int, count: int) -> list[str]:
    with gzip.open(DATA / "wikitext-2" / "valid.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    enc = store.chunker.tokenizer.encode(text, add_special_tokens=False)
    out = []
    for i in range(count):
        lo, hi = i * n_tokens, (i + 1) * n_tokens
        if hi > len(enc.offsets):
            break
        out.append(text[enc.offsets[lo][0] : enc.offsets[hi - 1][1]])
    return out


def pct(xs, q):
    return float(np.quantile(np.asarray(xs), q))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000, help="store size in chunks (default 100000)")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048, help="input length in the store's tokens")
    ap.add_argument("--repeats", type=int, default=40, help="timed calls (each on a different input)")
    ap.add_argument("--embedder", default="hash",
                    help="'hash' (ragstore.testing.HashEmbedder) or a ragstore spec, e.g. minilm")
    ap.add_argument("--store", default=None, help="store folder (default .cache/bench/retro-<embedder>-<chunks>)")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)

    cache = REPO / ".cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    tag = args.embedder.replace(":", "_").replace("/", "_")
    path = Path(args.store) if args.store else cache / f"retro-{tag}-{args.chunks}"
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:]))
    print(f"command: {command}")
    mach = machine()
    print(
        f"machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, {mach['platform']}, "
        f"load average {mach['load_average_1m']} at start"
    )

    if args.rebuild and path.exists():
        import shutil

        shutil.rmtree(path)
    built = not (path / "data.mdb").exists()
    print(f"store: {path} ({'building' if built else 'reusing'})")
    build_s, n = build(path, args.chunks, args.embedder)
    if built:
        print(f"  built {n:,} chunks in {build_s:.1f}s")

    store = ragstore.open(path, embedder=make_embedder(args.embedder), readonly=True)
    emb = store.embedder
    emb_desc = f"{emb.name} (dim {emb.dim})" + (
        ": the tests' HashEmbedder, a bag-of-words hash, not a neural model" if args.embedder == "hash" else ""
    )
    print(f"embedder: {emb_desc}")
    st = store.stats()
    print(
        f"store: {st.chunks:,} chunks, {st.documents:,} documents, {st.tokens:,} tokens, "
        f"chunk_tokens={store.config.chunk_tokens}, index {store.config.index_dtype}, "
        f"metric {store.config.metric}"
    )

    texts = inputs(store, args.tokens, 2 * args.repeats + 3)
    if len(texts) < 2 * args.repeats + 3:
        raise SystemExit("WikiText-2 valid is too short for that many inputs")
    for t in texts[:3]:  # warm-up: page cache, index pages, tokenizer
        retro.retrieve_sequence(store, t, k=args.k)
    runs = texts[3 : 3 + args.repeats]
    part_runs = texts[3 + args.repeats :]  # other inputs: nothing cached from the whole calls

    # whole calls, and their parts measured on other inputs, interleaved so that load
    # from other processes hits both alike
    total, n_chunks = [], []
    split_s, embed_s, search_s = [], [], []
    for t, tp in zip(runs, part_runs, strict=True):
        t0 = time.perf_counter()
        res = retro.retrieve_sequence(store, t, k=args.k)
        total.append(time.perf_counter() - t0)
        n_chunks.append(len(res))
        assert all(len(n) == args.k for n in res.neighbours)
        t0 = time.perf_counter()
        chunks = retro.split_sequence(store, tp)
        t1 = time.perf_counter()
        vecs = store.embed([c.text for c in chunks])
        t2 = time.perf_counter()
        store.query_many(vecs, args.k)
        t3 = time.perf_counter()
        split_s.append(t1 - t0)
        embed_s.append(t2 - t1)
        search_s.append(t3 - t2)

    minilm_ms = None
    if args.embedder == "hash":
        try:
            from ragstore.embedders import resolve

            m = resolve("minilm")
            chunks = [c.text for c in retro.split_sequence(store, runs[0])]
            m.encode(chunks[:4])
            ts = []
            for t in runs[:3]:
                cs = [c.text for c in retro.split_sequence(store, t)]
                t0 = time.perf_counter()
                m.encode(cs)
                ts.append(time.perf_counter() - t0)
            minilm_ms = 1000 * statistics.median(ts)
        except Exception as e:  # the default model may be unavailable
            print(f"(minilm query-embedding cost not measured: {e})")

    store.close()
    mach["load_average_1m_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    ms = lambda xs: round(1000 * statistics.median(xs), 2)  # noqa: E731
    result = {
        "benchmark": "retrieve_sequence",
        "command": command,
        "machine": mach,
        "embedder": emb_desc,
        "store_chunks": st.chunks,
        "store_documents": st.documents,
        "store_built_seconds": round(build_s, 1) if built else None,
        "input_tokens": args.tokens,
        "chunks_per_input": int(statistics.median(n_chunks)),
        "k": args.k,
        "repeats": len(total),
        "ms_per_call_median": ms(total),
        "ms_per_call_p90": round(1000 * pct(total, 0.9), 2),
        "ms_per_call_mean": round(1000 * statistics.mean(total), 2),
        "ms_per_chunk_median": round(1000 * statistics.median(total) / statistics.median(n_chunks), 3),
        "parts_ms_median": {"split": ms(split_s), "embed": ms(embed_s), "search_and_resolve": ms(search_s)},
        "minilm_query_embedding_ms": None if minilm_ms is None else round(minilm_ms, 1),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(
        f"result: retrieve_sequence of {args.tokens} tokens ({result['chunks_per_input']} chunks), k={args.k}, "
        f"store of {st.chunks:,} chunks: median {result['ms_per_call_median']} ms/call "
        f"(p90 {result['ms_per_call_p90']} ms, {result['ms_per_chunk_median']} ms/chunk) over {len(total)} calls"
    )
    p = result["parts_ms_median"]
    print(f"  parts: split {p['split']} ms, embed {p['embed']} ms, search+resolve {p['search_and_resolve']} ms")
    if minilm_ms is not None:
        print(f"  query-side embedding of the same chunks with minilm: {minilm_ms:.1f} ms (not included above)")
    out = Path(args.out) if args.out else cache / f"bench_retro-{tag}-{args.chunks}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"json: {os.path.relpath(out, REPO)}")
    return result


if __name__ == "__main__":
    main()
