"""One huge document against the same text as many 1 MB documents: time and peak memory of ``add``.

    python benchmarks/bench_big_doc.py [--mb 50] [--out .cache/bench/big-doc.json]

Each side runs in its own child process (so peak RSS is its own): the child
builds the text first (WikiText-2 test lines; each repetition of the file gets
its lines prefixed with a distinct word, so no two chunks are equal), then
opens a fresh store with the HashEmbedder (ragstore.testing: fast, so the
store's own work is what is measured) and times only the adds:

- big:  ``store.add("big", text)``, one document of ``--mb`` MB;
- many: ``store.add(f"d{i}", part)`` for each of ``--mb`` 1 MB parts of the same text.

Reported: the command, the machine and its load, both timings (wall and
CPU seconds: on a shared machine the CPU time is the steadier), their ratios
(big / many; the target is <= 1.5) and each child's peak RSS (ru_maxrss of
the child, read by the parent with getrusage(RUSAGE_CHILDREN) after each child
and by the child itself; the target is <= 1.5 GB for 50 MB).

    python benchmarks/bench_big_doc.py child big|many MB STORE   (one side; prints one JSON line)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data" / "wikitext-2" / "test.txt.gz"
MB = 1_000_000


def make_text(n_chars: int) -> str:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    out: list[str] = []
    size = rep = 0
    while size < n_chars:
        for ln in lines:
            s = f"r{rep} {ln}\n"
            out.append(s)
            size += len(s)
            if size >= n_chars:
                break
        rep += 1
    return "".join(out)[:n_chars]


def _cpu() -> float:
    """CPU seconds of this process, all threads (the tokenizer's too): steadier than wall time on a
    shared machine, where other processes take cores at will."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(mode: str, mb: int, store: str) -> dict:
    import ragstore
    from ragstore.testing import HashEmbedder

    text = make_text(mb * MB)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        cpu = _cpu()
        t = time.perf_counter()
        if mode == "big":
            s.add("big", text)
        else:
            for i in range(mb):
                s.add(f"d{i}", text[i * MB : (i + 1) * MB])
        seconds = time.perf_counter() - t
        cpu = _cpu() - cpu
        chunks = s.stats().chunks
        if mode == "big":
            assert s.get("big").text == text, "the big document did not read back exactly"
    return {"mode": mode, "mb": mb, "seconds": seconds, "cpu_seconds": cpu, "chunks": chunks,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_text_mb": rss_before / 1024}


def run_side(mode: str, mb: int, workdir: str) -> dict:
    """One side in a child process; its peak RSS also from getrusage(RUSAGE_CHILDREN)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run([sys.executable, str(HERE), "child", mode, str(mb), os.path.join(workdir, mode)],
                       capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit(f"the {mode} child failed:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN keeps the largest child so far: exact for the first, a lower bound after
    r["children_maxrss_mb"] = after / 1024 if after > before else None
    return r


def compare(mb: int, workdir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ragstore-bigdoc-", dir=workdir) as d:
        big = run_side("big", mb, d)
        many = run_side("many", mb, d)
    return {"big": big, "many": many, "ratio": big["seconds"] / many["seconds"],
            "cpu_ratio": big["cpu_seconds"] / many["cpu_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--out", default=str(REPO / ".cache" / "bench" / "big-doc.json"))
    ap.add_argument("--workdir", default=None, help="where the stores go (default: the system's temp folder)")
    a = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("load (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    r = compare(a.mb, a.workdir)
    for side in ("big", "many"):
        x = r[side]
        what = f"one {a.mb} MB document" if side == "big" else f"{a.mb} documents of 1 MB"
        print(f"{side:>4}: {what}: {x['seconds']:.1f} s ({x['cpu_seconds']:.1f} s CPU), {x['chunks']} chunks, "
              f"peak RSS {x['peak_rss_mb']:.0f} MB "
              f"(after building the text: {x['rss_after_text_mb']:.0f} MB)")
    print(f"ratio big/many: {r['ratio']:.2f} wall, {r['cpu_ratio']:.2f} CPU (target <= 1.5)")
    print("load after (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"command": sys.argv, "machine": platform.platform(), "cpus": os.cpu_count(), **r}, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
    else:
        main()
