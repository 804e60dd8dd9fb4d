"""Stores and imports of ragstore 0.1 keep working.

tests/fixtures/store-v1 was written by ragstore 0.1.0 (commit 5efee15, before
the engine was split into parts) with tests/fixtures/make_v1_store.py, which
also recorded its answers in store-v1.expected.json.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ragstore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "store-v1.expected.json").read_text())


@pytest.fixture
def v1_store(tmp_path):
    path = tmp_path / "store-v1"
    shutil.copytree(FIXTURES / "store-v1", path)
    return path


def _same_hits(got, want):
    assert [h.chunk_id for h in got] == [w["chunk_id"] for w in want]
    for h, w in zip(got, want, strict=True):
        d = h.to_dict()
        assert {k: d[k] for k in w if k != "score"} == {k: v for k, v in w.items() if k != "score"}
        assert h.score == pytest.approx(w["score"], abs=1e-6)


@pytest.mark.parametrize("readonly", [True, False])
def test_v1_store_answers_as_it_did(v1_store, readonly):
    with ragstore.open(v1_store, readonly=readonly) as s:
        assert s.config.to_dict() == EXPECTED["config"]
        queries = np.asarray(EXPECTED["queries"], dtype=np.float32)
        for mode in ("hnsw", "exact"):
            for q, want in zip(queries, EXPECTED[mode], strict=True):
                _same_hits(s.query(q, 5, exact=(mode == "exact")), want)
        _same_hits(s.query(queries[0], 3, sources=["speeches"]), EXPECTED["sources_query"])
        st = s.stats().to_dict()
        assert {k: st[k] for k in EXPECTED["stats"]} == EXPECTED["stats"]
        got_docs = {d: hashlib.sha256(s.get(d).text.encode()).hexdigest() for d in s.doc_ids()}
        assert got_docs == EXPECTED["documents"]
        report = s.check()
        assert report.ok and EXPECTED["check_ok"], report.problems


def test_v1_store_takes_new_writes_and_reopens(v1_store):
    queries = np.asarray(EXPECTED["queries"], dtype=np.float32)
    with ragstore.open(v1_store) as s:
        victim = EXPECTED["hnsw"][0][0]["doc_id"]
        n = s.delete(victim)
        assert n > 0 and victim not in s
        s.add("new-doc", "a new document written by this version", vectors=np.ones((1, 16), dtype=np.float32))
        assert s.check().ok
    with ragstore.open(v1_store, readonly=True) as s:
        assert "new-doc" in s and victim not in s
        assert all(h.doc_id != victim for h in s.query(queries[0], 5))
        assert s.check().ok


@pytest.mark.parametrize("old, new", [
    ("ragstore.embed", "ragstore.embedders.base"),
    ("ragstore.retro", "ragstore.retrieval.retro"),
    ("ragstore.pipeline", "ragstore.retrieval.pipeline"),
    ("ragstore.prompting", "ragstore.retrieval.prompting"),
    ("ragstore.chunking", "ragstore.engine.chunking"),
    ("ragstore.minilm", "ragstore.embedders.minilm"),
])
def test_module_names_of_0_1_still_import(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_old_names_load_nothing_until_asked():
    code = "import sys, ragstore; print('fastapi' in sys.modules, 'ragstore.serving.http' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.split() == ["False", "False"]


def test_record_codecs_write_the_bytes_of_0_1(v1_store):
    """Every record of the 0.1 store decodes by name and encodes back to the same bytes."""
    from ragstore.engine.records import ChunkRecord, DocRecord, Records

    rec = Records.acquire(str(v1_store), sync=False, map_size=None)
    try:
        with rec.read() as txn:
            n = 0
            for table, codec in ((rec.docs, DocRecord), (rec.chunks, ChunkRecord)):
                for _, raw in txn.cursor(db=table):
                    assert codec.decode(raw).encode() == bytes(raw)
                    n += 1
            assert n == EXPECTED["stats"]["documents"] + EXPECTED["stats"]["chunks"]
    finally:
        rec.release()
