"""ragstore against its peers, on real data: ingest, recall/QPS/latency, memory, disk, cold start, deletes.

    pip install -e '.[bench]'
    python benchmarks/embed_cache.py --chunks 100000          # once: MiniLM vectors of Wikipedia chunks
    python benchmarks/bench_peers.py --chunks 100000 --write-doc   # quick run (< 15 min on 2 cores)
    python benchmarks/bench_peers.py --chunks 300000                # full run

Data: the cached MiniLM vectors of 64-token Wikipedia chunks (benchmarks/embed_cache.py),
whole documents, up to --chunks (whatever is cached; the output says how many were used).
Queries: --queries held-out chunks: the chunks after the N stored when the cache has them,
else a slice of WikiText-2 valid embedded with ragstore.embedders.minilm.MiniLM (cached). Ground
truth: exact top-10 by numpy brute force over the same vectors (cached).

Each system runs in fresh subprocesses: one builds it (timed ingest, made durable) and sweeps
its search parameter (recall@10, batched QPS on all cores, single-threaded p50/p99); one opens
it cold and serves the queries (cold start, RSS delta); one deletes 10% of the documents
(recall, disk, time to reclaim). Results: .cache/bench/peers-N.json (+ .md tables), the plot
docs/img/peers-recall-qps.png, and with --write-doc the generated part of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import peers  # noqa: E402

# the benchmark's parts; their names stay importable from this script
from bench_peers_data import (  # noqa: E402
    BENCH,
    TARGETS,
    WIKITEXT,
    K,
    chunker,
    exact_topk,
    load_str,
    log,
    machine_info,
    prepare_data,
    proc_status,
    recall_at_k,
    recall_ids,
    unit,
    wikitext_queries,
)
from bench_peers_report import (  # noqa: E402
    DOC_BEGIN,
    DOC_END,
    fmt,
    operating_points,
    plot,
    ratio,
    report,
    serve_point,
    sys_label,
    targets,
    write_doc,
)
from bench_peers_workers import IMPORTS, worker_build, worker_delete, worker_serve  # noqa: E402

__all__ = [
    "run_worker",
    "main",
    "finish",
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
    "DOC_BEGIN",
    "DOC_END",
    "operating_points",
    "serve_point",
    "fmt",
    "ratio",
    "sys_label",
    "report",
    "targets",
    "plot",
    "write_doc",
    "worker_build",
    "worker_serve",
    "worker_delete",
    "IMPORTS",
]


def run_worker(kind: str, system: str, a, data_folder: Path, extra: list[str] = (), timeout: int = 3600) -> dict:
    out = BENCH / "work" / f"{kind}-{system}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--system", system,
           "--data", str(data_folder), "--stores", str(a.stores), "--threads", str(a.threads),
           "--worker-out", str(out), *extra]
    t0 = time.perf_counter()
    try:
        env = dict(os.environ)
        # OpenMP threads that spin while waiting starve each other on a shared machine
        # (FAISS IVF training took 3x longer); passive waiting costs nothing on a quiet one.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        p = subprocess.run(cmd, timeout=timeout, env=env)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    if rc != 0 or not out.exists():
        return {"error": f"{kind} worker exited with {rc}", "wall_s": time.perf_counter() - t0}
    r = json.loads(out.read_text())
    r["wall_s"] = time.perf_counter() - t0
    return r


# =========================================================================== main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000, help="chunks to store (100000 quick, >= 300000 full)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--systems", default=",".join(peers.DEFAULT),
                    help="comma-separated, from " + ",".join(peers.ALL) + "; default: " + ",".join(peers.DEFAULT))
    ap.add_argument("--no-delete", action="store_true", help="skip the delete-10%% experiment")
    ap.add_argument("--threads", type=int, default=0, help="threads for builds and batched queries (0: all cores)")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "wiki-minilm")
    ap.add_argument("--stores", type=Path, default=BENCH / "stores")
    ap.add_argument("--keep-stores", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON result (default .cache/bench/peers-N.json)")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "peers-recall-qps.png")
    ap.add_argument("--write-doc", action="store_true", help="update the generated section of docs/benchmarks.md")
    ap.add_argument("--report", type=Path, default=None, help="only re-render tables/plot/doc from a JSON result")
    # internal: worker subprocesses
    ap.add_argument("--worker", choices=["build", "serve", "delete"], help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default='""', help=argparse.SUPPRESS)
    ap.add_argument("--param", default="null", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        fn = {"build": worker_build, "serve": worker_serve, "delete": worker_delete}[a.worker]
        r = fn(a)
        Path(a.worker_out).write_text(json.dumps(r, default=float))
        return

    if a.report:
        res = json.loads(a.report.read_text())
        finish(res, a)
        return

    command = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/bench_peers.py", *sys.argv[1:]])
    log("$ " + command)
    t_start = time.perf_counter()
    machine = machine_info()
    log(f"machine: {machine['cpu']}, {machine['cores_usable']} cores, {machine['ram_gib']} GiB; {load_str()}")
    log("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    data_folder, data = prepare_data(a.cache, a.chunks, a.queries)
    if data["n_chunks"] < a.chunks:
        log(f"NOTE: only {data['cached_chunks']} chunks are cached; using {data['n_chunks']} "
            f"({data['n_docs']} documents), not the {a.chunks} asked for")
    log(f"data: {data['n_chunks']} chunks, {data['n_docs']} docs; queries: {data['queries']}")
    out = a.out or BENCH / f"peers-{data['n_chunks']}.json"
    res = {
        "command": command, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine, "data": data, "threads": a.threads, "load_start": os.getloadavg(),
        "systems": {},
    }
    for name in [x.strip() for x in a.systems.split(",") if x.strip()]:
        log(f"\n== {name} ({load_str()}, {(time.perf_counter() - t_start) / 60:.1f} min in)")
        r = run_worker("build", name, a, data_folder)
        r["family"] = peers.make(name).family
        if "error" not in r:
            v, p = serve_point(r)
            sv = run_worker("serve", name, a, data_folder, ["--variant", json.dumps(v), "--param", json.dumps(p)])
            r["serve"] = sv
            ops = operating_points(r["sweep"])
            if r["family"] == "ragstore" and "no rerank" in ops and v != "no rerank":
                pa = (ops["no rerank"]["0.95"] or ops["no rerank"]["best"])["param"]
                r["serve_alt"] = run_worker("serve", name, a, data_folder,
                                            ["--variant", json.dumps("no rerank"), "--param", json.dumps(pa)])
            if "rss_delta" in sv:
                log(f"  serve ({v} {p}): RSS delta {sv['rss_delta'] / 2**20:.1f} MiB "
                    f"({sv['rss_delta'] / data['n_chunks']:.0f} B/chunk), "
                    f"cold start {sv['open_first_query_s'] * 1e3:.0f} ms")
            if not a.no_delete and peers.make(name).can_delete:
                d = run_worker("delete", name, a, data_folder, ["--variant", json.dumps(v), "--param", json.dumps(p)])
                r["delete"] = d
                if "delete_s" in d:
                    rc = f"reclaim {d['reclaim_s']:.1f}s" if "reclaim_s" in d else "no reclaim"
                    log(f"  delete 10%: {d['delete_s']:.2f}s, recall {d['recall_after_delete']:.3f}; {rc}, "
                        f"disk {d['disk_before'] / 2**20:.1f} -> "
                        f"{d.get('disk_after_reclaim', d['disk_after_delete']) / 2**20:.1f} MiB")
            elif not peers.make(name).can_delete:
                r["delete"] = {"skipped": peers.make(name).reclaim_how}
        else:
            log(f"  FAILED: {r['error']}")
        r["load_after"] = os.getloadavg()
        res["systems"][name] = r
        if not a.keep_stores:
            peers.remove(peers.make(name).path_in(str(a.stores)))
        res["elapsed_s"] = time.perf_counter() - t_start
        res["load_end"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=float))
    res["elapsed_s"] = time.perf_counter() - t_start
    res["load_end"] = os.getloadavg()
    out.write_text(json.dumps(res, indent=1, default=float))
    log(f"\nresults: {out} ({res['elapsed_s'] / 60:.1f} min, {load_str()})")
    finish(res, a, out)


def finish(res: dict, a, out: Path | None = None) -> None:
    text = report(res)
    print("\n" + text)
    md = (out or a.report).with_suffix(".md")
    md.write_text(text)
    plot(res, a.plot)
    log(f"tables: {md}; plot: {a.plot}")
    if a.write_doc:
        doc = REPO / "docs" / "benchmarks.md"
        write_doc(doc, text, os.path.relpath(a.plot, doc.parent))
        log(f"updated {doc}")


if __name__ == "__main__":
    main()
