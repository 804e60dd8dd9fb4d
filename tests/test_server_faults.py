"""`ragstore serve --workers 2` under load while its processes are killed with SIGKILL.

Real subprocesses on loopback. While clients read and write, one worker (or
the writer process) is killed: requests in flight may fail, but each answer
is either a 2xx, a JSON 5xx, or a dropped connection (the killed worker's
own), never a hang (every client call has a timeout); the service recovers
(uvicorn restarts the worker, the server restarts the writer); and every
write acknowledged with a 2xx is in the store afterwards, read back with the
library.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import ragstore  # noqa: E402
from helpers import HashEmbedder  # noqa: E402
from test_server import Server, make_store  # noqa: E402

CLIENT_TIMEOUT = 20.0  # no answer within this is a hang


def children(pid: int) -> list[tuple[int, bytes]]:
    """(pid, cmdline) of the processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((int(entry.name), (entry / "cmdline").read_bytes()))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return out


def workers(server: Server) -> list[int]:
    return sorted(p for p, cmd in children(server.proc.pid) if b"spawn_main" in cmd)


def writer(server: Server) -> list[int]:
    return [p for p, cmd in children(server.proc.pid) if b"serve-writer" in cmd]


class Load:
    """Clients writing unique documents and querying, in threads, until stopped."""

    def __init__(self, url: str, n_writers: int = 2, n_readers: int = 2) -> None:
        self.url = url
        self.acked: set[str] = set()
        self.statuses: list[int] = []
        self.bad: list[str] = []  # answers that are neither 2xx, JSON 5xx nor a dropped connection
        self.dropped = 0
        self.slowest = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write, args=(w,)) for w in range(n_writers)]
        self._threads += [threading.Thread(target=self._read) for _ in range(n_readers)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=CLIENT_TIMEOUT + 10)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    def _call(self, c: httpx.Client, method: str, path: str, body: dict) -> httpx.Response | None:
        t0 = time.monotonic()
        try:
            r = c.request(method, path, json=body)
        except httpx.TimeoutException as e:
            with self._lock:
                self.bad.append(f"{method} {path}: no answer in {CLIENT_TIMEOUT}s ({e!r})")
            return None
        except httpx.TransportError:
            with self._lock:
                self.dropped += 1  # the connection to the killed worker
            return None
        finally:
            with self._lock:
                self.slowest = max(self.slowest, time.monotonic() - t0)
        with self._lock:
            self.statuses.append(r.status_code)
            if not (200 <= r.status_code < 300):
                try:
                    body_ok = r.status_code >= 500 and "error" in r.json() and "Traceback" not in r.text
                except ValueError:
                    body_ok = False
                if not body_ok:
                    self.bad.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r

    def _write(self, w: int) -> None:
        with httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT) as c:
            i = 0
            while not self._stop.is_set():
                doc_id = f"load-{w}-{i}"
                r = self._call(c, "POST", "/documents", {"id": doc_id, "text": f"load test document {w} {i} of owls"})
                if r is not None and r.status_code == 201:
                    with self._lock:
                        self.acked.add(doc_id)
                i += 1

    def _read(self) -> None:
        with httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT) as c:
            while not self._stop.is_set():
                self._call(c, "POST", "/query", {"query": "owls at night", "k": 3})


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def serves_reads_and_writes(url: str, tag: str) -> bool:
    try:
        with httpx.Client(base_url=url, timeout=5.0) as c:
            ok = c.post("/query", json={"query": "owls", "k": 1}).status_code == 200
            return ok and c.put(f"/documents/probe-{tag}", json={"text": "a probe write"}).status_code in (200, 201)
    except httpx.TransportError:
        return False


@pytest.fixture()
def server(tmp_path):
    make_store(tmp_path / "store", n_docs=4)
    s = Server(tmp_path / "store", tmp_path / "server.log", "--workers", "2")
    try:
        s.wait_ready()
        wait_until(lambda: len(workers(s)) == 2 and len(writer(s)) == 1, 60, "two workers and a writer")
        # each of the three has opened the store (health may be answered by one worker only)
        wait_until(lambda: s.log.read_text(errors="replace").count("Application startup complete") == 3, 60,
                   "every process started")
        yield s
    finally:
        s.stop()


def all_in_store(path: Path, ids: set[str]) -> set[str]:
    with ragstore.open(path, embedder=HashEmbedder(), readonly=True) as st:
        return {i for i in ids if i not in set(st.doc_ids())}


@pytest.mark.slow
def test_killing_a_worker_mid_load(server, tmp_path):
    before = workers(server)
    with Load(server.url) as load:
        time.sleep(1.5)
        os.kill(before[0], 9)
        time.sleep(3.0)
    assert not load.bad, load.bad[:5]
    assert load.slowest < CLIENT_TIMEOUT
    assert sum(200 <= s < 300 for s in load.statuses) > 10, load.statuses
    # uvicorn's supervisor replaces the worker; the service answers again
    wait_until(lambda: len(workers(server)) == 2 and before[0] not in workers(server), 60, "a new worker")
    wait_until(lambda: serves_reads_and_writes(server.url, "w"), 60, "reads and writes served")
    acked = set(load.acked)
    assert acked
    assert server.stop() == 0, server.tail()
    assert "Traceback" not in server.tail()
    assert all_in_store(tmp_path / "store", acked) == set()


@pytest.mark.slow
def test_killing_the_writer_mid_load(server, tmp_path):
    (old,) = writer(server)
    with Load(server.url) as load:
        time.sleep(1.5)
        os.kill(old, 9)
        # writes answer 503 (JSON) until the writer is back; reads go on
        time.sleep(1.0)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as c:
            during = c.put("/documents/during-outage", json={"text": "written while the writer is down"})
            read = c.post("/query", json={"query": "owls", "k": 1})
        wait_until(lambda: len(writer(server)) == 1 and writer(server)[0] != old, 60, "a new writer")
        wait_until(lambda: serves_reads_and_writes(server.url, "after"), 60, "writes served again")
        time.sleep(1.0)
    assert read.status_code == 200, read.text
    assert during.status_code in (200, 201, 503), during.text
    if during.status_code == 503:
        assert during.json()["error"] == "StoreClosedError" and "writer" in during.json()["message"]
    assert not load.bad, load.bad[:5]
    assert 503 in load.statuses, "no write was refused while the writer was down"
    assert load.slowest < CLIENT_TIMEOUT
    assert "restarting it" in server.log.read_text(errors="replace")
    acked = set(load.acked)
    assert any(i for i in acked)
    # the new writer holds the lock; the last writes after the restart were acknowledged too
    (new,) = writer(server)
    assert (tmp_path / "store" / "writer.lock").read_text().strip() == str(new)
    assert server.stop() == 0, server.tail()
    assert all_in_store(tmp_path / "store", acked | {"probe-after"}) == set()


@pytest.mark.slow
def test_a_writer_that_cannot_restart_stops_the_server_with_a_message(server, tmp_path):
    (old,) = writer(server)
    # the store moves away: workers keep their open files, a new writer finds nothing
    (tmp_path / "store").rename(tmp_path / "moved")
    os.kill(old, 9)
    try:
        server.proc.wait(timeout=120)
    except Exception:
        raise AssertionError(f"the server did not stop:\n{server.tail()}") from None
    log = server.log.read_text(errors="replace")
    assert server.proc.returncode == 1, log[-3000:]
    assert "error: the writer process could not be restarted" in log
    assert "Traceback" not in log
