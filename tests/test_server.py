"""The HTTP server, run for real: `ragstore serve` in subprocesses on loopback ports.

Stores use the test HashEmbedder, handed to the server by import path
(`--embedder helpers:HashEmbedder`, with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

import ragstore  # noqa: E402
from helpers import REPO, HashEmbedder, wiki_docs  # noqa: E402

TESTS = Path(__file__).resolve().parent
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMBEDDER = "helpers:HashEmbedder"
WRAPPER = (
    "from ragstore_cli.app import app, main\n"
    "from ragstore_cli.serve_cmds import register\n"
    "register(app)\n"
    "main()\n"
)


def cli_command() -> list[str]:
    """`ragstore` with its `serve` command (registered here until cli/app.py does it)."""
    from ragstore_cli.app import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    if "serve" in names:
        return [sys.executable, "-m", "ragstore"]
    return [sys.executable, "-c", WRAPPER]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ragstore serve STORE ...` in a subprocess, logging to a file."""

    def __init__(self, store: Path, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._logf = open(log, "wb")
        cmd = cli_command() + ["serve", str(store), "--port", str(self.port), "--embedder", EMBEDDER,
                               "--no-access-log", *args]
        self.proc = subprocess.Popen(cmd, env=env(), stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_bytes()[-4000:].decode(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode

    def client(self, auth: bool = True) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH if auth else {}, timeout=30.0)


def make_store(path: Path, n_docs: int = 12) -> None:
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as s:
        s.add_many(
            [
                {"id": d["id"], "text": d["text"], "source": "wiki", "meta": {"title": d["title"]}}
                for d in wiki_docs(n_docs)
            ]
        )
        s.add("cats", "the cat sat on the mat and purred at the dog", source="pets")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three servers started together: read-write with a token, a read-only
    reader of the same store, and two workers on another store."""
    root = tmp_path_factory.mktemp("srv")
    make_store(root / "a")
    make_store(root / "b", n_docs=4)
    rw = Server(root / "a", root / "rw.log", "--token", TOKEN, "--max-body-mb", "1", "--lock-timeout", "2")
    ro = Server(root / "a", root / "ro.log", "--read-only")
    multi = Server(root / "b", root / "multi.log", "--workers", "2")
    started = [rw, ro, multi]
    try:
        for s in started:
            s.wait_ready()
        yield {"rw": rw, "ro": ro, "multi": multi, "root": root}
    finally:
        codes = {s.url: s.stop() for s in started}
        for s in started:
            text = s.tail()
            assert "Traceback" not in text, text
        assert all(c == 0 for c in codes.values()), codes


@pytest.fixture()
def rw(servers):
    with servers["rw"].client() as c:
        yield c


@pytest.fixture()
def ro(servers):
    with servers["ro"].client(auth=False) as c:
        yield c


def assert_error(r, status: int, name: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == name, body
    assert body["message"]
    assert "Traceback" not in r.text
    return body


# ---------------------------------------------------------------------- auth
def test_health_is_open_everything_else_needs_the_token(servers):
    url = servers["rw"].url
    h = httpx.get(url + "/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    for path in ("/stats", "/openapi.json", "/documents/cats"):
        r = httpx.get(url + path)
        assert_error(r, 401, "Unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert_error(httpx.get(url + path, headers={"Authorization": "Bearer wrong"}), 401, "Unauthorized")
        assert_error(httpx.get(url + path, headers={"Authorization": TOKEN}), 401, "Unauthorized")
        assert httpx.get(url + path, headers=AUTH).status_code == 200
    assert_error(httpx.post(url + "/query", json={"query": "cat"}), 401, "Unauthorized")


def test_served_openapi_schema_is_the_committed_one(rw):
    served = rw.get("/openapi.json").json()
    committed = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert served == committed, "regenerate: python -m ragstore.serving.openapi > docs/openapi.json"


# ---------------------------------------------------------------------- documents
def test_add_get_replace_delete_round_trip(rw):
    doc_id = "dir/ünï code?#%20 id"
    path = "/documents/" + quote(doc_id, safe="")
    text = "  Zebras graze on the savanna.\n\nThey live in herds of many zebras.  "
    doc = {"id": doc_id, "text": text, "source": "animals", "meta": {"legs": 4, "tags": ["a"]}}
    r = rw.post("/documents", json=doc)
    assert r.status_code == 201 and r.json()["doc_id"] == doc_id and r.json()["status"] == "added"
    got = rw.get(path).json()
    assert got["text"] == text and got["meta"] == {"legs": 4, "tags": ["a"]} and got["source"] == "animals"
    assert_error(rw.post("/documents", json={"id": doc_id, "text": "again"}), 409, "AlreadyExistsError")
    r = rw.post("/documents", json={"id": doc_id, "text": text, "source": "animals", "meta": {"legs": 4, "tags": ["a"]},
                                    "replace": True})
    assert r.status_code == 200 and r.json()["status"] == "unchanged"
    r = rw.put(path, json={"text": "zebras replaced", "source": "animals"})
    assert r.status_code == 200 and r.json()["status"] == "replaced"
    assert rw.get(path).json()["text"] == "zebras replaced"
    hit = rw.post("/query", json={"query": "zebras replaced", "k": 1, "sources": ["animals"]}).json()["hits"][0]
    assert hit["doc_id"] == doc_id and rw.get(f"/chunks/{hit['chunk_id']}").json()["text"] == "zebras replaced"
    assert rw.delete(path).json() == {"chunks_removed": 1}
    assert_error(rw.get(path), 404, "NotFoundError")
    assert_error(rw.delete(path), 404, "NotFoundError")
    r = rw.put("/documents/put-new", json={"text": "a new one"})
    assert r.status_code == 201 and r.json()["status"] == "added"


def test_batch_add_and_delete(rw):
    docs = [{"id": f"batch-{i}", "text": f"batch document number {i} about owls", "meta": {"i": i}} for i in range(5)]
    r = rw.post("/documents:batch", json={"documents": docs})
    assert r.status_code == 200 and r.json()["added"] == 5
    r = rw.post("/documents:batch", json={"documents": docs, "replace": True})
    assert r.json()["unchanged"] == 5
    assert_error(rw.post("/documents:delete", json={"ids": ["batch-0", "nope"]}), 404, "NotFoundError")
    assert rw.get("/documents/batch-0").status_code == 200  # nothing was deleted
    r = rw.post("/documents:delete", json={"ids": ["batch-0", "batch-1", "nope"], "missing_ok": True})
    assert r.json() == {"chunks_removed": 2}
    ids = [f"batch-{i}" for i in range(2, 5)]
    assert rw.post("/documents:delete", json={"ids": ids}).json() == {"chunks_removed": 3}


# ---------------------------------------------------------------------- retrieval
def test_query_by_text_and_vector_with_filters(rw):
    emb = HashEmbedder()
    q = "the cat sat on the mat"
    hits = rw.post("/query", json={"query": q, "k": 3}).json()["hits"]
    assert len(hits) == 3 and hits[0]["doc_id"] == "cats"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert set(hits[0]) == {"chunk_id", "doc_id", "source", "position", "score", "text", "continuation", "start",
                            "end", "meta"}
    vec = emb.encode([q])[0].tolist()
    by_vec = rw.post("/query", json={"query": vec, "k": 3}).json()["hits"]
    assert [h["chunk_id"] for h in by_vec] == [h["chunk_id"] for h in hits]
    exact = rw.post("/query", json={"query": q, "k": 3, "exact": True, "rerank": True}).json()["hits"]
    assert exact[0]["chunk_id"] == hits[0]["chunk_id"]
    hits = rw.post("/query", json={"query": q, "k": 5, "sources": ["wiki"]}).json()["hits"]
    assert all(h["source"] == "wiki" for h in hits)
    assert rw.post("/query", json={"query": q, "k": 5, "sources": ["no-such-source"]}).json()["hits"] == []
    others = rw.post("/query", json={"query": q, "k": 5, "exclude_docs": ["cats"]}).json()["hits"]
    assert len(others) == 5 and all(h["doc_id"] != "cats" for h in others)
    batch = rw.post("/query/batch", json={"queries": [q, "politician of china"], "k": 2}).json()["results"]
    assert len(batch) == 2 and batch[0][0]["doc_id"] == "cats"
    vbatch = rw.post("/query/batch", json={"queries": emb.encode([q, "politician of china"]).tolist(), "k": 2}).json()
    assert [h["chunk_id"] for h in vbatch["results"][0]] == [h["chunk_id"] for h in batch[0]]


def test_retrieve_a_whole_sequence(rw, servers):
    text = " ".join(d["text"] for d in wiki_docs(2))[:1500]
    r = rw.post("/retrieve", json={"text": text, "k": 2})
    assert r.status_code == 200, r.text
    chunks = r.json()["chunks"]
    assert len(chunks) > 3 and [c["position"] for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c["start"]:c["end"]] == c["text"] and c["n_tokens"] <= 16
        assert len(c["neighbours"]) == 2
    # the text comes from the store itself: its own chunks are the nearest
    first_doc = wiki_docs(1)[0]["id"]
    assert chunks[0]["neighbours"][0]["doc_id"] == first_doc
    assert chunks[0]["neighbours"][0]["continuation"] is not None
    excl = rw.post("/retrieve", json={"text": text, "k": 2, "exclude_docs": [first_doc]}).json()["chunks"]
    assert all(n["doc_id"] != first_doc for c in excl for n in c["neighbours"])
    # causal layout: position u holds what chunk u-1 found
    shifted = rw.post("/retrieve", json={"text": text, "k": 2, "shift": True}).json()["chunks"]
    assert shifted[0]["neighbours"] == [] and shifted[0]["retrieved_with"] is None
    assert shifted[1]["retrieved_with"] == 0 and shifted[1]["neighbours"] == chunks[0]["neighbours"]
    # leakage filter: the store's own copy of the text overlaps 100% and is dropped
    clean = rw.post("/retrieve", json={"text": text, "k": 2, "max_overlap": 0.5}).json()["chunks"]
    assert all(o <= 0.5 for c in clean for o in c["overlaps"])
    assert clean[0]["neighbours"][0]["chunk_id"] != chunks[0]["neighbours"][0]["chunk_id"]
    assert_error(rw.post("/retrieve", json={"text": text, "max_overlap": 2}), 422, "ValidationError")


# ---------------------------------------------------------------------- errors
def test_errors_map_to_status_codes(rw):
    assert_error(rw.get("/documents/no-such-doc"), 404, "NotFoundError")
    assert_error(rw.get("/chunks/999999999"), 404, "NotFoundError")
    # refused by the schema (422 ValidationError) or by the engine (422 InvalidInputError)
    assert_error(rw.post("/documents", json={"id": "e", "text": "   "}), 422, "ValidationError")
    assert_error(rw.post("/documents", json={"id": "x" * 600, "text": "long id"}), 422, "ValidationError")
    assert_error(rw.post("/documents", json={"id": "é" * 300, "text": "600 bytes"}), 422, "InvalidInputError")
    assert_error(rw.post("/documents", json={"id": "e", "text": "two words", "vectors": [[1.0] * 31]}), 422,
                 "InvalidInputError")
    assert_error(rw.post("/query", json={"query": [1.0] * 5}), 422, "InvalidInputError")
    assert_error(rw.post("/query", json={"query": [0.0] * 32}), 422, "InvalidInputError")
    assert_error(rw.post("/query", json={"query": ""}), 422, "ValidationError")
    assert_error(rw.post("/query", json={"query": "ok", "sources": ["s" * 300]}), 422, "ValidationError")
    assert_error(rw.post("/query/batch", json={"queries": [[1.0] * 32, [1.0] * 31]}), 422, "InvalidInputError")
    assert_error(rw.post("/query/batch", json={"queries": ["text", [1.0] * 32]}), 422, "ValidationError")
    body = assert_error(rw.post("/query", json={"query": "cat", "k": "3"}), 422, "ValidationError")
    assert body["details"][0]["loc"] == ["body", "k"]
    assert_error(rw.post("/query", json={"query": "cat", "k": 0}), 422, "ValidationError")
    assert_error(rw.post("/query", json={"query": "cat", "bogus": 1}), 422, "ValidationError")
    assert_error(rw.post("/query", content=b"{not json", headers={"content-type": "application/json"}), 422,
                 "ValidationError")
    assert_error(rw.get("/no/such/route"), 404, "NotFound")
    assert_error(rw.delete("/stats"), 405, "MethodNotAllowed")
    big = {"id": "big", "text": "word " * 300_000}  # 1.5 MB; this server takes 1 MB
    assert_error(rw.post("/documents", json=big), 413, "PayloadTooLarge")


def test_another_writer_holding_the_lock_gives_423(tmp_path):
    """In-process app: a second Store in this process holds the flock."""
    from ragstore.serving.http import create_app

    path = tmp_path / "locked"
    make_store(path, n_docs=1)
    holder = ragstore.open(path, embedder=HashEmbedder())
    holder.add("held", "the holder writes first and keeps the lock")
    app = create_app(path, embedder=HashEmbedder(), lock_timeout=0.2)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert_error(c.post("/documents", json={"id": "x", "text": "blocked write"}), 423, "StoreLockedError")
            assert c.get("/documents/held").status_code == 200  # reads never wait
    finally:
        holder.close()


def test_internal_errors_are_logged_and_answered_generically(tmp_path, caplog):
    from ragstore.serving.http import create_app

    path = tmp_path / "s"
    make_store(path, n_docs=1)
    with ragstore.open(path, embedder=HashEmbedder()) as st:
        app = create_app(st)

        def broken():
            raise RuntimeError("secret internal detail")

        st.stats = broken  # type: ignore[method-assign]
        with caplog.at_level("ERROR", logger="ragstore.server"):
            with TestClient(app, raise_server_exceptions=False) as c:
                r = c.get("/stats")
        body = assert_error(r, 500, "InternalError")
        assert "secret" not in r.text and "RuntimeError" not in r.text
        assert "reference" in body["message"]
        assert any("secret internal detail" in (rec.exc_text or "") for rec in caplog.records)


def test_precomputed_store_takes_vectors_and_refuses_text(tmp_path):
    from ragstore.serving.http import create_app

    path = tmp_path / "pre"
    emb = HashEmbedder()
    with ragstore.open(path, embedder=ragstore.embedders.Precomputed(32, tokenizer_json=emb.tokenizer_json()),
                       chunk_tokens=16) as st:
        app = create_app(st)
        with TestClient(app, raise_server_exceptions=False) as c:
            v = emb.encode(["short text"]).tolist()
            assert c.post("/documents", json={"id": "p", "text": "short text", "vectors": v}).status_code == 201
            assert_error(c.post("/documents", json={"id": "q", "text": "no vectors"}), 422, "InvalidInputError")
            assert_error(c.post("/query", json={"query": "text"}), 422, "InvalidInputError")
            assert c.post("/query", json={"query": v[0], "k": 1}).json()["hits"][0]["doc_id"] == "p"


# ---------------------------------------------------------------------- processes
def test_read_only_server_refuses_writes_and_sees_the_writers_commits(rw, ro):
    assert ro.get("/health").json()["readonly"] is True
    assert_error(ro.post("/documents", json={"id": "r", "text": "refused"}), 403, "ReadOnlyError")
    assert_error(ro.put("/documents/r", json={"text": "refused"}), 403, "ReadOnlyError")
    assert_error(ro.delete("/documents/cats"), 403, "ReadOnlyError")
    assert_error(ro.post("/documents:delete", json={"ids": ["cats"]}), 403, "ReadOnlyError")
    assert_error(ro.post("/documents:batch", json={"documents": [{"id": "r", "text": "x"}]}), 403, "ReadOnlyError")
    text = "a unique sentence about quokkas written through the other process"
    assert rw.post("/documents", json={"id": "quokka", "text": text}).status_code == 201
    # the reader process sees the commit at its next query
    assert ro.post("/query", json={"query": text, "k": 1}).json()["hits"][0]["doc_id"] == "quokka"
    assert ro.get("/documents/quokka").json()["text"] == text
    assert rw.delete("/documents/quokka").status_code == 200
    assert all(h["doc_id"] != "quokka" for h in ro.post("/query", json={"query": text, "k": 3}).json()["hits"])
    assert_error(ro.get("/documents/quokka"), 404, "NotFoundError")


def test_two_workers_send_writes_to_one_writer(servers):
    with servers["multi"].client(auth=False) as c:
        def add(i: int) -> int:
            return c.post("/documents", json={"id": f"w/{i}", "text": f"parallel write {i} about lemurs"}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(add, range(16))) == [201] * 16
        assert_error(c.post("/documents", json={"id": "w/0", "text": "dup"}), 409, "AlreadyExistsError")
        # every read, whichever worker answers it, sees every write
        for i in range(16):
            hits = c.post("/query", json={"query": f"parallel write {i} about lemurs", "k": 1}).json()["hits"]
            assert hits[0]["doc_id"] == f"w/{i}"
        assert c.get("/stats").json()["documents"] == 5 + 16
        assert c.put("/documents/" + quote("w/0", safe=""), json={"text": "replaced"}).json()["status"] == "replaced"
        assert c.get("/documents/w%2F0").json()["text"] == "replaced"
        assert c.post("/documents:delete", json={"ids": [f"w/{i}" for i in range(16)]}).status_code == 200
        assert c.get("/stats").json()["documents"] == 5
    # the process holding the writer lock (its pid is in the lock file) is the writer, not a worker
    holder = (servers["root"] / "b" / "writer.lock").read_text().strip()
    cmdline = Path(f"/proc/{holder}/cmdline")
    if cmdline.exists():
        assert b"serve-writer" in cmdline.read_bytes()


def test_serve_reports_a_missing_store_without_a_traceback(tmp_path):
    r = subprocess.run(cli_command() + ["serve", str(tmp_path / "none"), "--port", str(free_port())],
                       env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "error:" in r.stderr and "no ragstore store" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------- fuzzing
def test_schemathesis_finds_no_server_error(servers):
    """Generated requests for every operation of the served schema: never a 5xx, never a traceback,
    and every response as the schema documents it (status, content type, body, headers)."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, response_headers_conformance]

    url = servers["rw"].url
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=AUTH)
    schema.config.update(base_url=url)
    failures: list[str] = []
    t0 = time.monotonic()

    def no_traceback(ctx, response, case):
        assert "Traceback" not in response.text, "a traceback reached the client"

    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()
        for mode, n in ((GenerationMode.POSITIVE, 20), (GenerationMode.NEGATIVE, 10)):

            @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal calls
                calls += 1
                response = case.call(base_url=url, headers=AUTH, timeout=30)
                case.validate_response(response, checks=[*checks, no_traceback])

            try:
                run()
            except Unsatisfiable:
                pass  # nothing to break: an operation with no parameters has no negative case
            except Exception as e:  # collect every operation's failure, report them together
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)
    assert calls > 100
    print(f"schemathesis: {calls} requests in {time.monotonic() - t0:.1f}s")


# ---------------------------------------------------------------------- load
@pytest.mark.slow
def test_load_32_clients_for_30_seconds_without_errors():
    """benchmarks/bench_server.py: 32 concurrent clients, 30 s, loopback; figures in docs/server.md.

    The test embedder keeps the server, not MiniLM's ~100-300 ms per query, the thing under load."""
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_server.py"), "--clients", "32",
                        "--seconds", "30", "--embedder", "hash", "--json"],
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    print(result)
    assert result["errors"] == 0, result
    assert result["server_tracebacks"] == 0
    assert result["ok"] > 0
