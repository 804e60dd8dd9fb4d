"""Load test of the HTTP server: N concurrent clients on loopback for S seconds.

    python benchmarks/bench_server.py [--clients 32] [--seconds 30] [--workers 1]
                                      [--embedder minilm|hash] [--chunks 200] [--json]

Builds a temporary store from the wiki sample in ../shared/data (at most
``--chunks`` chunks: MiniLM embeds ~100 chunks/s here), starts
``python -m ragstore.serving.http`` on a free loopback port, and has ``--clients``
asyncio clients send ``POST /query`` (a text, k=10) back to back until the
time is up. Prints requests, errors, QPS and latency percentiles; the server
is stopped at the end. Traffic goes to 127.0.0.1 only and the run is bounded
in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))

__all__ = ["main"]  # a script: main() is its door


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(path: Path, embedder: str, max_chunks: int) -> tuple[int, int, list[str]]:
    """(documents, chunks) of a new store at ``path``, and query texts from other documents."""
    import ragstore
    from helpers import HashEmbedder, wiki_docs

    docs = wiki_docs(400)
    emb = HashEmbedder() if embedder == "hash" else None
    kwargs = {"embedder": emb, "chunk_tokens": 64} if emb else {}
    n_docs = 0
    with ragstore.open(path, **kwargs) as st:
        chunks = 0
        batch = []
        for d in docs:
            n = len(st.chunk(d["text"]))
            if chunks + n > max_chunks:
                continue
            batch.append({"id": d["id"], "text": d["text"], "source": "wiki", "meta": {"title": d["title"]}})
            chunks += n
        st.add_many(batch)
        n_docs = len(batch)
        stored = {b["id"] for b in batch}
    queries = [" ".join(d["text"].split()[:24]) for d in docs if d["id"] not in stored][:200]
    return n_docs, chunks, queries


async def load(url: str, queries: list[str], clients: int, seconds: float, token: str | None) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    first_errors: list[str] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    deadline = time.perf_counter() + seconds

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60.0) as c:

        async def client(i: int) -> None:
            j = i
            while time.perf_counter() < deadline:
                q = queries[j % len(queries)]
                j += clients
                t0 = time.perf_counter()
                try:
                    r = await c.post("/query", json={"query": q, "k": 10})
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 10
                    key = None if ok else f"HTTP {r.status_code}"
                except Exception as e:  # counted, never hidden
                    key = type(e).__name__
                    first_errors.append(f"{time.perf_counter() - deadline + seconds:.2f}s {key}: {e!r}")
                dt = time.perf_counter() - t0
                if key is None:
                    latencies.append(dt)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - t0

    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

    return {
        "requests": len(lat) + sum(errors.values()),
        "ok": len(lat),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "first_errors": first_errors[:5],
        "seconds": round(wall, 2),
        "qps": round(len(lat) / wall, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * lat[-1], 2) if lat else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    p.add_argument("--chunks", type=int, default=200, help="store size in chunks")
    p.add_argument("--token", default=None, help="run the server with --token (measures the auth check too)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    a = p.parse_args(argv)
    if not (1 <= a.clients <= 256 and 0 < a.seconds <= 300):
        p.error("clients must be in 1..256 and seconds in (0, 300]")

    with tempfile.TemporaryDirectory(prefix="ragstore-bench-") as tmp:
        store = Path(tmp) / "store"
        t0 = time.perf_counter()
        n_docs, n_chunks, queries = build_store(store, a.embedder, a.chunks)
        build_s = time.perf_counter() - t0
        port = free_port()
        cmd = [sys.executable, "-m", "ragstore.serving.http", str(store), "--port", str(port),
               "--workers", str(a.workers), "--no-access-log", "--log-level", "info"]
        if a.embedder == "hash":
            cmd += ["--embedder", "helpers:HashEmbedder"]
        if a.token:
            cmd += ["--token", a.token]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        log = open(Path(tmp) / "server.log", "wb")
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    log_tail = (Path(tmp) / "server.log").read_text()[-2000:]
                    raise SystemExit(f"server exited with {server.returncode}: {log_tail}")
                try:
                    if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start in 120 s")
                time.sleep(0.2)
            # warm-up: first queries load caches
            asyncio.run(load(url, queries, min(a.clients, 4), 1.0, a.token))
            result = asyncio.run(load(url, queries, a.clients, a.seconds, a.token))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
        server_log = (Path(tmp) / "server.log").read_text(errors="replace")
    result.update({
        "clients": a.clients, "workers": a.workers, "embedder": a.embedder, "documents": n_docs,
        "chunks": n_chunks, "build_seconds": round(build_s, 1), "cpus": os.cpu_count(),
        "server_tracebacks": server_log.count("Traceback"),
    })
    if result["errors"] or result["server_tracebacks"]:
        result["server_log_tail"] = server_log[-3000:]
    if a.json:
        print(json.dumps(result))
    else:
        print(
            f"{a.clients} clients x {result['seconds']}s, {a.workers} worker(s), embedder {a.embedder}, "
            f"store {n_docs} docs / {n_chunks} chunks\n"
            f"  requests {result['requests']}  errors {result['errors']} {result['error_kinds'] or ''}\n"
            f"  QPS {result['qps']}  p50 {result['p50_ms']} ms  p90 {result['p90_ms']} ms  "
            f"p99 {result['p99_ms']} ms  max {result['max_ms']} ms"
        )
    return result


if __name__ == "__main__":
    main()
