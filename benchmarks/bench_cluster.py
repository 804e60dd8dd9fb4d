"""ragstore.cluster: build time and query QPS for 1, 2 and 4 shards on the same documents, and
the per-query overhead of Ray against calls to one in-process Store.

    python benchmarks/bench_cluster.py [--docs 2000] [--queries 200] [--shards 1 2 4] [--nodes 3]
                                       [--out results.json]

Documents: the first ``--docs`` articles of ../shared/data/wiki/wiki-AA.jsonl.gz (cut to
``--chars`` characters), embedded with ragstore.testing.HashEmbedder (dim 64): the figures are
the engine's and Ray's, not a neural model's. The cluster is simulated on this machine
(ray.cluster_utils.Cluster, ``--nodes`` nodes of 1 CPU each), so every shard shares the same
cores and disk: scaling is bounded by the machine's cores, not by the design. Reported for each
shard count: build seconds (and where the time went: waiting for the embed pool vs the writers),
query QPS (batches of ``--batch`` queries and single queries), against the same documents in one
Store queried in-process; the overhead per single query is cluster latency minus Store latency.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import ragstore  # noqa: E402
from ragstore import cluster  # noqa: E402
from ragstore.testing import HashEmbedder  # noqa: E402


def load(n: int, chars: int) -> list[dict]:
    with gzip.open(DATA / "wiki" / "wiki-AA.jsonl.gz", "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in itertools.islice(f, n)]
    return [{"id": f"w{i}", "text": d["text"][:chars], "source": f"part-{i % 4}"} for i, d in enumerate(raw)]


def timed_queries(fn, queries, batch: int) -> dict:
    t = time.perf_counter()
    for i in range(0, len(queries), batch):
        fn(queries[i: i + batch])
    batched = time.perf_counter() - t
    lat = []
    for q in queries[: max(20, len(queries) // 4)]:
        t = time.perf_counter()
        fn([q])
        lat.append(time.perf_counter() - t)
    return {"qps_batched": len(queries) / batched, "single_ms_median": 1000 * statistics.median(lat),
            "single_ms_p90": 1000 * sorted(lat)[int(0.9 * (len(lat) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--chars", type=int, default=1500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out")
    args = ap.parse_args()
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}, ray {ray.__version__}")
    print("load before (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    docs = load(args.docs, args.chars)
    queries = [d["text"][200:300] or d["text"][:100] for d in docs[:: max(1, len(docs) // args.queries)]]
    queries = queries[: args.queries]
    emb = HashEmbedder(dim=64)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    results: dict = {"args": vars(args), "load_before": os.getloadavg(), "shards": {}}
    try:
        t = time.perf_counter()
        single = ragstore.open(tmp / "single", embedder=emb)
        single.add_many(docs)
        results["single_build_s"] = time.perf_counter() - t
        results["chunks"] = single.stats().chunks
        results["single_text"] = timed_queries(lambda qs: single.query_many(qs, k=args.k), queries, args.batch)
        print(f"one store: {len(docs)} docs, {results['chunks']} chunks built in {results['single_build_s']:.1f}s; "
              f"{results['single_text']['qps_batched']:.0f} q/s batched, "
              f"{results['single_text']['single_ms_median']:.2f} ms a single query", flush=True)
        c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, object_store_memory=100 << 20,
                                                              include_dashboard=False))
        for _ in range(args.nodes - 1):
            c.add_node(num_cpus=1, object_store_memory=100 << 20)
        c.wait_for_nodes()
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        for n in args.shards:
            root = tmp / f"sharded-{n}"
            s = cluster.build(root, docs, shards=n, embedder=emb, embed_actors=args.nodes, embed_cpus=1.0,
                              batch_docs=256)
            with cluster.open(root, embedder=emb) as cs:
                cs.query_many(queries[:4], k=args.k)  # actors started and stores opened
                q = timed_queries(lambda qs: cs.query_many(qs, k=args.k), queries, args.batch)
                recall_hits = cs.query_many(queries[:50], k=args.k)
                reader = cs._readers[0][0]
                pings = []
                for _ in range(50):  # the floor: one Ray call to an actor doing (almost) nothing
                    t = time.perf_counter()
                    ray.get(reader.count.remote())
                    pings.append(time.perf_counter() - t)
            want = single.query_many(queries[:50], k=args.k, exact=True)
            found = sum(len({(h.doc_id, h.position) for h in g} & {(h.doc_id, h.position) for h in w})
                        for g, w in zip(recall_hits, want, strict=True))
            r = {"build_s": s.seconds, "startup_s": s.startup_seconds, "embed_wait_s": s.embed_seconds,
                 "write_wait_s": s.write_seconds, "ray_call_ms_median": 1000 * statistics.median(pings),
                 "per_shard": s.per_shard, **q, "recall_at_k_vs_exact": found / (args.k * len(want)),
                 "overhead_ms_per_single_query": q["single_ms_median"] - results["single_text"]["single_ms_median"],
                 "qps_ratio_vs_single_store": q["qps_batched"] / results["single_text"]["qps_batched"]}
            results["shards"][n] = r
            print(f"{n} shard(s): build {s.seconds:.1f}s (actors starting {s.startup_seconds:.1f}s, embed wait "
                  f"{s.embed_seconds:.1f}s, write wait {s.write_seconds:.1f}s); {q['qps_batched']:.0f} q/s batched "
                  f"({r['qps_ratio_vs_single_store']:.2f}x one store), single query {q['single_ms_median']:.1f} ms "
                  f"median, {q['single_ms_p90']:.1f} p90 (Ray overhead {r['overhead_ms_per_single_query']:.1f} ms); "
                  f"recall@{args.k} {r['recall_at_k_vs_exact']:.3f}; one bare Ray actor call "
                  f"{r['ray_call_ms_median']:.2f} ms; load {os.getloadavg()[0]:.2f}", flush=True)
        base = results["shards"].get(args.shards[0])
        for n in args.shards[1:]:
            r = results["shards"][n]
            print(f"{n} vs {args.shards[0]} shard(s): build x{base['build_s'] / r['build_s']:.2f} faster, "
                  f"batched q/s x{r['qps_batched'] / base['qps_batched']:.2f}")
        single.close()
        ray.shutdown()
        c.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    print("load after (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
