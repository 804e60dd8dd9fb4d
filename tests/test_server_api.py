"""The HTTP app in process (TestClient): routes that cannot collide with document
ids, auth in the schema and before everything else, responses shaped by the
engine's dataclasses, error bodies without server paths."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

import ragstore  # noqa: E402
from helpers import REPO, HashEmbedder  # noqa: E402
from ragstore.types import Document, IngestSummary, Stats  # noqa: E402

TESTS = Path(__file__).resolve().parent
TOKEN = "tok-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def assert_error(r, status: int, name: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == name, body
    assert body["message"] and "Traceback" not in r.text
    return body


@pytest.fixture()
def store(tmp_path):
    with ragstore.open(tmp_path / "store", embedder=HashEmbedder(), chunk_tokens=16) as st:
        st.add("cats", "the cat sat on the mat and purred at the dog", source="pets", meta={"raw": b"\x00\xff"})
        yield st


@pytest.fixture()
def client(store):
    from ragstore.serving.http import create_app

    with TestClient(create_app(store), raise_server_exceptions=False) as c:
        yield c


# ---------------------------------------------------------------------- routes
def test_ids_named_like_the_old_batch_routes_are_documents(client):
    """PUT /documents/delete used to create a document named "delete" next to a
    batch route of that path; now every id lives under /documents/{id} only."""
    for name in ("delete", "batch"):
        r = client.put(f"/documents/{name}", json={"text": f"a document whose id is {name}"})
        assert r.status_code == 201, r.text
        assert r.json() == {"doc_id": name, "status": "added", "n_chunks": 1}
        assert client.get(f"/documents/{name}").json()["text"] == f"a document whose id is {name}"
    # the old batch paths are document paths: POST is not one of their methods
    assert_error(client.post("/documents/batch", json={"documents": [{"id": "x", "text": "y"}]}), 405,
                 "MethodNotAllowed")
    assert_error(client.post("/documents/delete", json={"ids": ["cats"]}), 405, "MethodNotAllowed")
    assert client.get("/documents/cats").status_code == 200
    assert client.delete("/documents/delete").json() == {"chunks_removed": 1}
    assert_error(client.get("/documents/delete"), 404, "NotFoundError")
    assert client.get("/documents/batch").status_code == 200


def test_colon_routes_add_and_delete_many(client):
    docs = [{"id": f"owl-{i}", "text": f"owl number {i} hunts at night"} for i in range(3)]
    r = client.post("/documents:batch", json={"documents": docs})
    assert r.status_code == 200, r.text
    body = r.json()
    # the whole IngestSummary, skipped included, and nothing else
    assert set(body) == {f.name for f in dataclasses.fields(IngestSummary)}
    assert (body["documents"], body["added"], body["skipped"]) == (3, 3, 0)
    assert client.post("/documents:batch", json={"documents": docs, "replace": True}).json()["unchanged"] == 3
    assert client.post("/documents:delete", json={"ids": ["owl-0", "owl-1"]}).json() == {"chunks_removed": 2}
    assert_error(client.post("/documents:delete", json={"ids": ["owl-2", "nope"]}), 404, "NotFoundError")
    assert client.get("/documents/owl-2").status_code == 200  # nothing deleted


def test_responses_are_the_engine_dataclasses(client, store):
    stats = client.get("/stats").json()
    assert set(stats) == {f.name for f in dataclasses.fields(Stats)}
    assert stats["documents"] == 1
    doc = client.get("/documents/cats").json()
    assert set(doc) == {f.name for f in dataclasses.fields(Document)}
    assert doc == {**dataclasses.asdict(store.get("cats")), "meta": {"raw": "00ff"}}  # bytes as hex (jsonenc)
    assert client.get("/config").json() == store.config.to_dict()


def test_one_json_encoder_in_serving():
    """Bodies, MCP results and --json output are all written by serving/jsonenc.py."""
    serving = REPO / "ragstore" / "serving"
    offenders = [p.name for p in serving.glob("*.py")
                 if p.name != "jsonenc.py" and ("json.dumps" in p.read_text() or "def _json_default" in p.read_text())]
    assert offenders == []


# ---------------------------------------------------------------------- auth
@pytest.fixture()
def locked(store):
    from ragstore.serving.http import create_app

    with TestClient(create_app(store, token=TOKEN, max_body_bytes=1000), raise_server_exceptions=False) as c:
        yield c


def test_openapi_declares_the_bearer_scheme():
    from ragstore.serving.http import openapi_schema

    schema = openapi_schema()
    schemes = schema["components"]["securitySchemes"]
    assert list(schemes.values()) == [{**next(iter(schemes.values())), "type": "http", "scheme": "bearer"}]
    name = next(iter(schemes))
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if path == "/health":
                assert "security" not in op, (method, path)
            else:
                assert op["security"] == [{name: []}], (method, path)


def test_token_is_checked_before_anything_else(locked):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        for r in (
            locked.get("/stats", headers=headers),
            locked.get("/openapi.json", headers=headers),
            locked.get("/docs", headers=headers),
            locked.get("/no/such/route", headers=headers),
            locked.post("/query", content=b"{not json", headers={**headers, "content-type": "application/json"}),
            locked.post("/query", json={"query": "cat", "k": "3"}, headers=headers),
            locked.post("/documents", json={"id": "big", "text": "x" * 5000}, headers=headers),
        ):
            assert_error(r, 401, "Unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert locked.get("/health").json()["status"] == "ok"
    assert locked.get("/stats", headers=AUTH).json()["documents"] == 1
    assert "paths" in locked.get("/openapi.json", headers=AUTH).json()
    assert "swagger" in locked.get("/docs", headers=AUTH).text.lower()
    assert_error(locked.get("/no/such/route", headers=AUTH), 404, "NotFound")
    assert_error(locked.post("/documents", json={"id": "big", "text": "x" * 5000}, headers=AUTH), 413,
                 "PayloadTooLarge")


# ---------------------------------------------------------------------- errors
def test_error_messages_hold_no_server_paths(client, store, caplog):
    where = os.path.realpath(store.path)
    with caplog.at_level("INFO", logger="ragstore.serving.http"):
        answers = [
            (client.get("/documents/nope"), 404, "NotFoundError"),
            (client.delete("/documents/nope"), 404, "NotFoundError"),
            (client.get("/chunks/999999"), 404, "NotFoundError"),
            (client.post("/documents", json={"id": "cats", "text": "again"}), 409, "AlreadyExistsError"),
            (client.post("/documents:delete", json={"ids": ["nope"]}), 404, "NotFoundError"),
        ]
    for r, status, name in answers:
        body = assert_error(r, status, name)
        assert where not in r.text and store.path not in r.text, r.text
        assert "/tmp" not in r.text and str(Path(where).parent) not in r.text, r.text
        assert "the store" in body["message"], body
    assert client.get("/documents/nope").json()["message"] == "no document 'nope' in the store"
    # the log keeps the detail
    assert any(store.path in rec.getMessage() for rec in caplog.records)


def test_public_message_takes_out_paths_not_ids():
    from ragstore.serving.middleware import public_message

    p = "/srv/data/my store"
    assert public_message(f"store {p} is closed; open it again", [p]) == "the store is closed; open it again"
    assert public_message(f"the store at {p} is damaged: x", [p]) == "the store is damaged: x"
    assert public_message(f"no document 'a/b' in {p}", [p]) == "no document 'a/b' in the store"
    assert public_message(f"cannot lock {p}/writer.lock now", [p]) == "cannot lock the store now"
    assert (public_message(f"the store at {p} is damaged: run `ragstore check --fix {p}` to salvage", [p])
            == "the store is damaged: run `ragstore check --fix STORE` to salvage")
    assert public_message("no document '/etc/passwd' in x", []) == "no document '/etc/passwd' in x"
    assert public_message("cannot read /var/lib/other/file.db today", []) == "cannot read <path> today"


def test_unreadable_json_bodies_are_422_as_documented(client):
    bodies = {
        "invalid UTF-8": b'{"query": "\xff\xfe"}',
        "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
        "not JSON": b"{not json",
    }
    for what, body in bodies.items():
        r = client.post("/query", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (what, r.text)
        assert_error(r, 422, "ValidationError")
    doc = (REPO / "docs" / "server.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| 422 | `ValidationError`"))
    assert "invalid UTF-8" in row and "too deep" in row, row
    assert "| 400 |" not in doc


# ---------------------------------------------------------------------- names and processes
def test_module_doors():
    import ragstore.server as old
    import ragstore.serving.http as http

    assert old is http
    for name in http.__all__:
        assert getattr(http, name) is not None
    assert http.create_app.__module__ == "ragstore.serving.app"


def test_worker_app_takes_its_options_from_the_environment(tmp_path, monkeypatch):
    from ragstore.serving.http import ENV_CONFIG, app_from_env
    from ragstore.serving.options import ServeOptions

    with ragstore.open(tmp_path / "w", embedder=HashEmbedder(), chunk_tokens=16) as st:
        st.add("a", "one small document")
    opts = ServeOptions(store=str(tmp_path / "w"), token=TOKEN, readonly=True, embedder="helpers:HashEmbedder")
    monkeypatch.setenv(ENV_CONFIG, opts.to_json())
    with TestClient(app_from_env(), raise_server_exceptions=False) as c:
        assert_error(c.get("/stats"), 401, "Unauthorized")
        assert c.get("/health").json()["readonly"] is True
        assert c.get("/stats", headers=AUTH).json()["documents"] == 1
        assert_error(c.put("/documents/b", json={"text": "refused"}, headers=AUTH), 403, "ReadOnlyError")


def _env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "RAGSTORE_SERVER_CONFIG"}
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


def test_writer_command_is_hidden_and_wants_its_environment():
    top = subprocess.run([sys.executable, "-m", "ragstore", "--help"], capture_output=True, text=True,
                         env=_env(), timeout=60)
    assert top.returncode == 0 and "serve" in top.stdout and "serve-writer" not in top.stdout
    r = subprocess.run([sys.executable, "-m", "ragstore", "serve-writer"], capture_output=True, text=True,
                       env=_env(), timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    assert "RAGSTORE_SERVER_CONFIG" in r.stderr and "Traceback" not in r.stderr


def test_python_m_http_is_ragstore_serve():
    r = subprocess.run([sys.executable, "-m", "ragstore.serving.http", "--help"], capture_output=True, text=True,
                       env={**_env(), "COLUMNS": "200"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage: ragstore serve" in r.stdout and "--workers" in r.stdout


def test_openapi_module_writes_the_committed_schema():
    r = subprocess.run([sys.executable, "-m", "ragstore.serving.openapi"], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- the server's disk, not the request
@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ragstore.DiskFullError("the disk holding the store is full; free space and retry"), 507),
        (ragstore.StoreNotWritableError("the store's folder is read-only; make it writable"), 503),
        (ragstore.StorageError("I/O error writing the store; check the disk"), 503),
    ],
)
def test_storage_failures_have_their_own_status(client, store, monkeypatch, exc, status):
    """A full or read-only disk is the server's state, not bad input: not 4xx, not a bare 500."""

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(store, "add", fail)
    monkeypatch.setattr(store, "add_many", fail)
    before = store.stats().documents
    r = client.put("/documents/new", json={"text": "a document the disk cannot take"})
    body = assert_error(r, status, type(exc).__name__)
    assert str(exc) in body["message"]
    assert store.stats().documents == before


def test_a_store_holding_nan_answers_valid_json(tmp_path, monkeypatch):
    """Stores written before metadata was checked may hold NaN: the reply is still JSON (null)."""
    from ragstore.engine import ingest as ingest_mod
    from ragstore.serving.http import create_app

    path = tmp_path / "nan"
    with monkeypatch.context() as m:
        m.setattr(ingest_mod, "check_meta", lambda meta: dict(meta or {}))
        with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as s:
            s.add("n", "owls hunt at night", meta={"v": float("nan"), "w": [float("inf")], "ok": 1})
    with ragstore.open(path, embedder=HashEmbedder()) as st, TestClient(create_app(st)) as c:
        r = c.post("/query", json={"query": "owls hunt at night", "k": 1})
        assert r.status_code == 200, r.text
        assert "NaN" not in r.text and "Infinity" not in r.text
        hit = json.loads(r.text, parse_constant=lambda x: pytest.fail(f"invalid JSON constant {x}"))["hits"][0]
        assert hit["doc_id"] == "n" and hit["meta"] == {"v": None, "w": [None], "ok": 1}
        r = c.get("/documents/n")
        assert r.status_code == 200 and r.json()["meta"]["v"] is None
