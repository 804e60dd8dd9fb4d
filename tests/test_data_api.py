"""The everyday data API: listing, chunk iteration, metadata updates, min_score, export/import,
hot backup, re-embedding, the async API, and the defects found on the way (unsourced documents
selected by "", ``--embedder module:attr`` on every command, an honest report of a missing chunk).

Library calls in-process with the fast hash embedder; the CLI through real subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ragstore
from helpers import HashEmbedder, wiki_docs
from ragstore import AsyncStore, InvalidInputError, NotFoundError, ReadOnlyError
from ragstore.engine.codecs import u64


class CountingEmbedder(HashEmbedder):
    """The hash embedder, counting the texts it embeds (to prove nothing is re-embedded)."""

    def __init__(self, *a, delay: float = 0.0, **k) -> None:
        super().__init__(*a, **k)
        self.texts = 0
        self.delay = delay

    def encode(self, texts):
        self.texts += len(texts)
        if self.delay:
            time.sleep(self.delay)
        return super().encode(texts)


TEXTS = {
    "cats": "the cat sat on the mat and purred while the dog slept by the door all afternoon long",
    "owls": "owls hunt mice at night and sleep in hollow trees during the bright day",
    "ships": "a cargo ship crossed the ocean at night under a sky full of stars and clouds",
    "notes": "notes without a source: shopping list with milk bread eggs and some apples",
}
SOURCES = {"cats": "pets", "owls": "birds", "ships": "sea", "notes": None}


@pytest.fixture
def emb():
    return CountingEmbedder()


@pytest.fixture
def st(tmp_path, emb):
    s = ragstore.open(tmp_path / "s", embedder=emb, chunk_tokens=8)
    for d, t in TEXTS.items():
        s.add(d, t, source=SOURCES[d], meta={"n": len(t)})
    yield s
    s.close()


# ---------------------------------------------------------------------- defect: "" is "no source"
def test_unsourced_documents_are_selected_by_empty_source(st):
    assert st.sources()[""] == st.get("notes").n_chunks
    assert list(st.doc_ids(source="")) == ["notes"]
    hits = st.query("shopping milk bread", k=50, sources=[""])
    assert hits and {h.doc_id for h in hits} == {"notes"} and all(h.source is None for h in hits)
    assert {h.doc_id for h in st.query("shopping milk bread", k=50, sources=["", "pets"])} == {"notes", "cats"}
    lex = st.query("shopping milk", k=50, sources=[""], mode="lexical")
    assert lex and {h.doc_id for h in lex} == {"notes"}
    assert {h.doc_id for h in st.query("milk", k=50, sources=[""], exact=True)} == {"notes"}
    assert [d.id for d in st.list_documents(source="").documents] == ["notes"]
    with pytest.raises(InvalidInputError):
        st.query("x", sources=["a\x00b"])  # other bad names are still refused


# ---------------------------------------------------------------------- defect: check reports a missing chunk
def test_check_reports_a_missing_chunk_record_honestly(st):
    first = st.get("owls").first_chunk_id
    st._records.write(lambda txn: txn.delete(u64(first + 1), db=st._records.chunks))
    r = st.check()
    assert not r.ok
    assert any("'owls'" in p and "chunk 1 missing" in p for p in r.problems), r.problems
    assert not any("-1" in p or "belong to no document" in p and p.startswith("-") for p in r.problems)


# ---------------------------------------------------------------------- listing and chunks
def test_list_documents_pages_with_a_cursor(tmp_path):
    with ragstore.open(tmp_path / "many", embedder=HashEmbedder(), chunk_tokens=16) as s:
        docs = wiki_docs(23)
        s.add_many([{"id": d["id"], "text": d["text"][:300], "source": "wiki" if i % 2 else None,
                     "meta": {"i": i}} for i, d in enumerate(docs)])
        seen, after, pages = [], None, 0
        while True:
            page = s.list_documents(limit=10, after=after)
            pages += 1
            seen += page.documents
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert pages == 3 and [d.id for d in seen] == list(s.doc_ids())
        one = next(d for d in seen if d.meta["i"] == 3)
        assert one.source == "wiki" and one.n_chunks == s.get(one.id).n_chunks
        assert [d.id for d in s.iter_documents(source="wiki")] == list(s.doc_ids(source="wiki"))
        assert s.list_documents(limit=len(docs)).next_cursor is None  # exactly one full page: no empty next
        for bad in (0, -1, 10_001, "5", True):
            with pytest.raises(InvalidInputError):
                s.list_documents(limit=bad)


def test_iter_chunks_of_a_document_and_of_the_store(st):
    for doc_id in TEXTS:
        doc = st.get(doc_id)
        cs = list(st.iter_chunks(doc_id, vectors=True))
        assert [c.position for c in cs] == list(range(doc.n_chunks))
        assert all(doc.text[c.start:c.end] == c.text and c.doc_id == doc_id for c in cs)
        assert np.array_equal(np.stack([c.vector for c in cs]), st.vectors(doc_id))
    every = list(st.iter_chunks())
    assert len(every) == st.stats().chunks and all(c.vector is None for c in every)
    assert [c.chunk_id for c in every] == sorted(c.chunk_id for c in every)
    assert {c.source for c in every if c.doc_id == "notes"} == {None}
    with pytest.raises(NotFoundError):
        list(st.iter_chunks("nope"))


# ---------------------------------------------------------------------- update_meta
def test_update_meta_without_reembedding(st, emb):
    before = emb.texts
    index_before = st.stats().index_vectors
    info = st.update_meta("cats", {"legs": 4})
    assert info.meta == {"legs": 4} and st.get("cats").meta == {"legs": 4}
    assert st.update_meta("cats", {"tail": True}, merge=True).meta == {"legs": 4, "tail": True}
    assert emb.texts == before and st.stats().index_vectors == index_before
    assert st.query("cat sat on the mat", k=1)[0].meta == {"legs": 4, "tail": True}
    assert st.query("cat mat", k=1, mode="lexical")[0].doc_id == "cats"
    # the content hash follows the metadata: re-adding the same document is "unchanged"
    before = emb.texts
    r = st.add("cats", TEXTS["cats"], source="pets", meta={"legs": 4, "tail": True}, replace=True)
    assert r.status == "unchanged" and emb.texts == before
    assert st.check().ok


def test_update_meta_bad_input_changes_nothing(st, tmp_path):
    meta = st.get("owls").meta
    for bad in ({"x": math.nan}, {1: "a"}, "text", None):
        with pytest.raises(InvalidInputError):
            st.update_meta("owls", bad)
    with pytest.raises(NotFoundError, match="nothing was changed"):
        st.update_meta("nope", {"a": 1})
    assert st.get("owls").meta == meta
    st.close()
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder(), readonly=True) as ro:
        with pytest.raises(ReadOnlyError):
            ro.update_meta("owls", {"a": 1})


# ---------------------------------------------------------------------- min_score
def test_min_score(st):
    all_hits = st.query("owls hunt mice at night", k=20)
    floor = all_hits[2].score
    kept = st.query("owls hunt mice at night", k=20, min_score=floor)
    assert kept == [h for h in all_hits if h.score >= floor] and len(kept) >= 3
    assert st.query("owls", k=5, min_score=1.01) == []
    many = st.query_many(["owls hunt", "cargo ship"], k=5, min_score=floor)
    assert all(h.score >= floor for hs in many for h in hs)
    lex = st.query("owls mice", k=5, mode="lexical", min_score=0.0)
    assert lex and all(h.score >= 0 for h in lex)
    assert ragstore.QueryOptions().min_score is None
    for bad in ("0.5", math.nan, math.inf, True):
        with pytest.raises(InvalidInputError, match="min_score"):
            st.query("owls", min_score=bad)


# ---------------------------------------------------------------------- export / import
def test_export_import_with_vectors_does_not_reembed(st, tmp_path):
    path = tmp_path / "out.jsonl.gz"
    r = st.export_jsonl(path, vectors=True)
    assert r.documents == len(TEXTS) and r.vectors
    target_emb = CountingEmbedder()
    with ragstore.open(tmp_path / "t", embedder=target_emb, chunk_tokens=8) as t:
        summary = t.import_jsonl(path)
        assert summary.added == len(TEXTS) and target_emb.texts == 0
        for d in TEXTS:
            a, b = st.get(d), t.get(d)
            assert (a.text, a.source, a.meta) == (b.text, b.source, b.meta)
            assert np.allclose(st.vectors(d), t.vectors(d), atol=1e-3)
        assert t.import_jsonl(path).unchanged == len(TEXTS)  # a rerun resumes
        assert t.check().ok


def test_import_refuses_vectors_of_another_make_and_bad_files(st, tmp_path):
    path = tmp_path / "out.jsonl"
    st.export_jsonl(path, vectors=True)
    with ragstore.open(tmp_path / "t16", embedder=HashEmbedder(), chunk_tokens=16) as t:
        with pytest.raises(InvalidInputError, match="chunk_tokens"):
            t.import_jsonl(path)
        assert len(t) == 0
        assert t.import_jsonl(path, vectors=False).added == len(TEXTS)  # embedded again
        assert t.get("owls").text == TEXTS["owls"]
    lines = path.read_text(encoding="utf-8").splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n", encoding="utf-8")
    no_vectors = tmp_path / "no-vectors.jsonl"
    no_vectors.write_text("\n".join([*lines[:2], json.dumps({"id": "x", "text": "y"})]) + "\n", encoding="utf-8")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "text": "b"}) + "\n", encoding="utf-8")
    with ragstore.open(tmp_path / "t8", embedder=HashEmbedder(), chunk_tokens=8) as t:
        with pytest.raises(InvalidInputError, match="line 4"):
            t.import_jsonl(broken)
        with pytest.raises(InvalidInputError, match="line 3: its vectors are missing"):
            t.import_jsonl(no_vectors)
        with pytest.raises(InvalidInputError, match="not a ragstore export"):
            t.import_jsonl(plain)
        with pytest.raises(NotFoundError):
            t.import_jsonl(tmp_path / "missing.jsonl")
        assert len(t) == 0  # bad input wrote nothing


def test_export_of_one_source_and_without_vectors(st, tmp_path):
    path = tmp_path / "notes.jsonl"
    assert st.export_jsonl(path, source="").documents == 1
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["format"] == "ragstore-export/1" and lines[0]["vectors"] is False
    assert lines[1] == {"id": "notes", "text": TEXTS["notes"], "source": None, "meta": {"n": len(TEXTS["notes"])}}


# ---------------------------------------------------------------------- backup
def test_hot_backup_while_a_writer_runs(tmp_path):
    path = tmp_path / "live"
    docs = [{"id": d["id"], "text": d["text"][:400]} for d in wiki_docs(60)]
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16, checkpoint_every=50) as s:
        s.add_many(docs[:20])
        s.checkpoint()
        stop = threading.Event()
        errors = []

        def writer() -> None:
            try:
                for d in docs[20:]:
                    if stop.is_set():
                        return
                    s.add(d["id"], d["text"])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        results = [s.backup(tmp_path / f"bk{i}") for i in range(3)]
        stop.set()
        t.join()
        assert not errors
        with pytest.raises(InvalidInputError, match="not an empty folder"):
            s.backup(tmp_path / "bk0")
    for r in results:
        with ragstore.open(r.path, embedder=HashEmbedder(), create=False) as b:
            assert 20 <= len(b) == r.documents <= 60
            assert b.check().ok
            for doc_id in b.doc_ids():  # every document's vectors are in the restored index
                top = b.query(b.vectors(doc_id)[0], k=1)[0]
                assert top.score > 0.999 and top.text == next(b.iter_chunks(doc_id)).text
    assert results[0].index_included


# ---------------------------------------------------------------------- re-embedding
def test_reembed_is_resumable(st, tmp_path):
    target = tmp_path / "t"
    calls = []

    def stop_after_first(p):
        calls.append(p)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        st.reembed(target, embedder=HashEmbedder(dim=16, name="other"), chunk_tokens=4, batch_size=1,
                   on_progress=stop_after_first)
    with ragstore.open(target, embedder=HashEmbedder(dim=16, name="other"), create=False) as t:
        done = len(t)
    assert 1 <= done < len(TEXTS)
    s = st.reembed(target, embedder=HashEmbedder(dim=16, name="other"))
    assert s.unchanged == done and s.added == len(TEXTS) - done
    with ragstore.open(target, embedder=HashEmbedder(dim=16, name="other"), create=False) as t:
        assert t.config.dim == 16 and t.config.chunk_tokens == 4
        assert {d: t.get(d).text for d in TEXTS} == TEXTS and t.get("cats").meta == st.get("cats").meta
        assert t.query("owls hunt mice", k=1)[0].doc_id == "owls"
    with pytest.raises(InvalidInputError, match="into itself"):
        st.reembed(st.path)


# ---------------------------------------------------------------------- async
def test_async_store_keeps_the_loop_responsive(tmp_path):
    slow = CountingEmbedder(delay=0.3)
    with ragstore.open(tmp_path / "a", embedder=slow, chunk_tokens=8) as s:
        s.add("owls", TEXTS["owls"])

        async def main() -> tuple[int, list]:
            a = AsyncStore(s)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            hits = await a.query("owls hunt", k=1)  # embeds for 0.3 s in a thread
            page = await a.list_documents()
            info = await a.update_meta("owls", {"x": 1})
            task.cancel()
            return ticks, [hits, page, info]

        ticks, (hits, page, info) = asyncio.run(main())
        assert hits[0].doc_id == "owls" and page.documents[0].id == "owls" and info.meta == {"x": 1}
        assert ticks >= 10  # a blocking call would have let the ticker run ~once

    async def opened() -> int:
        async with await AsyncStore.open(tmp_path / "a", embedder=HashEmbedder(), readonly=True) as a:
            return len((await a.list_documents()).documents)

    assert asyncio.run(opened()) == 1


# ---------------------------------------------------------------------- the CLI, in subprocesses
def _ragstore(cwd: Path, *args: object) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ragstore")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ragstore"]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "100"})


def test_cli_data_commands(tmp_path):
    # an embedder named module:attr, importable from the current folder only
    (tmp_path / "myemb.py").write_text("from ragstore.testing import HashEmbedder\n\n"
                                       "def make():\n    return HashEmbedder()\n", encoding="utf-8")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d, "text": t, "source": SOURCES[d], "meta": {"k": d}}) + "\n"
                            for d, t in TEXTS.items()), encoding="utf-8")
    E = ("--embedder", "myemb:make")

    def ok(*args: object) -> str:
        p = _ragstore(tmp_path, *args)
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    ok("ingest", "s", docs, *E, "--chunk-tokens", "8")
    hits = json.loads(ok("query", "s", "owls hunt mice", "-k", "1", "--json", *E))["hits"]
    assert hits[0]["doc_id"] == "owls"
    assert json.loads(ok("query", "s", "owls", "--min-score", "1.01", "--json", *E))["hits"] == []
    unsourced = json.loads(ok("query", "s", "milk bread", "-s", "", "--json", *E))["hits"]
    assert {h["doc_id"] for h in unsourced} == {"notes"}

    page = json.loads(ok("list", "s", "--limit", "2", "--json"))
    assert [d["id"] for d in page["documents"]] == ["cats", "notes"] and page["next_cursor"] == "notes"
    assert "more: --after notes" in ok("list", "s", "--limit", "2")
    rest = json.loads(ok("list", "s", "--after", "notes", "--json"))
    assert [d["id"] for d in rest["documents"]] == ["owls", "ships"] and rest["next_cursor"] is None
    assert TEXTS["ships"] in ok("get", "s", "ships")
    lines = [json.loads(x) for x in ok("chunks", "s", "owls", "--vectors").splitlines()]
    assert [c["position"] for c in lines] == list(range(len(lines))) and len(lines[0]["vector"]) == 32

    assert json.loads(ok("set-meta", "s", "owls", '{"year": 2024}', "--merge", "--json"))["meta"] == \
        {"k": "owls", "year": 2024}
    for bad in ("{nope", "[1]"):
        p = _ragstore(tmp_path, "set-meta", "s", "owls", bad)
        assert p.returncode == 1 and p.stderr.startswith("error: ") and "META_JSON" in p.stderr
    p = _ragstore(tmp_path, "set-meta", "s", "nope", "{}")
    assert p.returncode == 1 and "no document 'nope'" in p.stderr

    assert "exported 4 documents" in ok("export", "s", "out.jsonl", "--vectors")
    assert "4 added" in ok("import", "t", "out.jsonl", *E, "--batch", "64")
    assert "4 unchanged" in ok("import", "t", "out.jsonl", *E)
    assert "backed up 4 documents" in ok("backup", "s", "bk")
    assert json.loads(ok("list", "bk", "--json"))["documents"][2]["meta"] == {"k": "owls", "year": 2024}
    assert "4 added" in ok("reembed", "s", "m", *E, "--chunk-tokens", "4")
    assert "4 unchanged" in ok("reembed", "s", "m", *E)
    assert "ok:" in ok("check", "m")

    # a missing chunk record: reported as such, never as "-1 chunk records belong to no document"
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder(), create=False) as s:
        first = s.get("ships").first_chunk_id
        s._records.write(lambda txn: txn.delete(u64(first), db=s._records.chunks))
    p = _ragstore(tmp_path, "check", "s")
    assert p.returncode == 1 and "'ships': chunk 0 missing" in p.stdout and "-1" not in p.stdout


# ---------------------------------------------------------------------- HTTP
def test_http_list_and_update_meta(st):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from ragstore.serving.http import create_app

    with TestClient(create_app(st), raise_server_exceptions=False) as c:
        page = c.get("/documents", params={"limit": 2}).json()
        assert [d["id"] for d in page["documents"]] == ["cats", "notes"] and page["next_cursor"] == "notes"
        rest = c.get("/documents", params={"after": "notes"}).json()
        assert [d["id"] for d in rest["documents"]] == ["owls", "ships"] and rest["next_cursor"] is None
        assert [d["id"] for d in c.get("/documents", params={"source": ""}).json()["documents"]] == ["notes"]
        assert c.get("/documents", params={"limit": 0}).status_code == 422
        r = c.patch("/documents/owls", json={"meta": {"year": 2024}, "merge": True})
        assert r.status_code == 200 and r.json()["meta"] == {"n": len(TEXTS["owls"]), "year": 2024}
        assert c.get("/documents/owls").json()["meta"]["year"] == 2024
        r = c.patch("/documents/nope", json={"meta": {}})
        assert r.status_code == 404 and r.json()["error"] == "NotFoundError"
        r = c.patch("/documents/owls", json={"meta": "x"})
        assert r.status_code == 422 and st.get("owls").meta["year"] == 2024
        hits = c.post("/query", json={"query": "owls hunt", "k": 5, "min_score": 1.01}).json()["hits"]
        assert hits == []
        r = c.post("/query", json={"query": "milk bread", "k": 5, "sources": [""]})
        assert r.status_code == 200 and {h["doc_id"] for h in r.json()["hits"]} == {"notes"}
