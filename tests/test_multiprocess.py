"""One writer and several reader processes on the same store."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import ragstore
from helpers import HashEmbedder

PROCS = str(Path(__file__).resolve().parent / "procs.py")


def spawn(*args, stdin=None):
    return subprocess.Popen(
        [sys.executable, PROCS, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_readers_see_each_commit_at_their_next_query(tmp_path):
    path = tmp_path / "s"
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=32) as s:
        s.add("seed", "a first document so that readers open an existing store")
    readers = [spawn("reader", str(path), stdin=subprocess.PIPE) for _ in range(3)]
    try:
        for r in readers:
            assert r.stdout.readline().strip() == "READY", r.stderr.read()
        writer = spawn("writer", str(path), "w", "60", "--delete-every", "0", "--checkpoint-every", "50")
        checked = 0
        with ragstore.open(path, readonly=True, embedder=HashEmbedder()) as probe:
            for line in writer.stdout:
                if not line.startswith("ACK"):
                    continue
                doc_id = line.split()[1]
                # The commit is acknowledged: each reader's very next query must see it.
                first = probe.get_chunk(probe.get(doc_id).first_chunk_id)
                for r in readers:
                    r.stdin.write(json.dumps([doc_id, first.text]) + "\n")
                    r.stdin.flush()
                for r in readers:
                    answer = r.stdout.readline().strip()
                    assert answer == "OK", (answer, r.stderr.read() if not answer else "")
                checked += 1
        assert writer.wait(60) == 0, writer.stderr.read()
        assert checked >= 60
    finally:
        for r in readers:
            r.stdin.close()
            r.wait(30)
            err = r.stderr.read()
            assert r.returncode == 0 and "Traceback" not in err, err
    with ragstore.open(path, embedder=HashEmbedder()) as s:
        assert len(s) == checked + 1 and s.check().ok


def test_second_writer_gets_a_clear_error_or_waits(tmp_path):
    path = tmp_path / "s"
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=32) as s:
        s.add("x", "the first writer holds the lock from its first write")
        out = subprocess.run(
            [sys.executable, PROCS, "lock", str(path), "0"], capture_output=True, text=True, timeout=60
        )
        assert out.stdout.startswith("StoreLockedError"), out
        assert "one writer at a time" in out.stdout and "readonly=True" in out.stdout
        waiter = spawn("lock", str(path), "30")
        time.sleep(1.5)
        assert waiter.poll() is None  # still waiting for the lock
    # the first writer closed: the waiting one gets the lock and writes
    out, err = waiter.communicate(timeout=60)
    assert out.startswith("WROTE"), (out, err)
    with ragstore.open(path, readonly=True, embedder=HashEmbedder()) as s:
        assert "from-second-writer" in s and "x" in s


def test_reader_threads_share_one_store(tmp_path):
    path = tmp_path / "s"
    s = ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        try:
            while not stop.is_set():
                for h in s.query("document number", k=5):
                    assert h.text and h.doc_id.startswith("d")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(3)]
    s.add("d-0", "document number zero")
    for t in threads:
        t.start()
    for i in range(1, 80):
        s.add(f"d-{i}", f"document number {i} with some words")
        if i % 10 == 0:
            s.delete(f"d-{i - 5}")
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert s.check().ok
    s.close()
