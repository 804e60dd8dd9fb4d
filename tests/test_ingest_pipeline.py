"""Ingest is pipelined: a batch is embedded while the one before it is committed.

Commits stay one at a time and in input order; the call returns once every
batch is durable; a failed commit is raised and keeps the batches before it.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import ragstore
from helpers import HashEmbedder
from ragstore.engine import ingest as ingest_mod


class SlowEmbedder(HashEmbedder):
    """Records when each encode call starts and ends."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, float]] = []

    def encode(self, texts):
        t = time.perf_counter()
        time.sleep(0.05)
        out = super().encode(texts)
        self.calls.append((t, time.perf_counter()))
        return out


def docs(n: int, prefix: str = "d"):
    return [{"id": f"{prefix}{i}", "text": f"document {i} about owls and gulls number {i}"} for i in range(n)]


def test_embedding_overlaps_the_commit_before_it(tmp_path, monkeypatch):
    emb = SlowEmbedder()
    commits: list[tuple[float, float, str, list[str]]] = []
    real = ingest_mod.write_documents

    def slow_write(records, batch, dtype):
        t = time.perf_counter()
        time.sleep(0.15)  # an fsync on a slow disk
        real(records, batch, dtype)
        commits.append((t, time.perf_counter(), threading.current_thread().name, [p.doc_id for p in batch]))

    monkeypatch.setattr(ingest_mod, "write_documents", slow_write)
    with ragstore.open(tmp_path / "s", embedder=emb, chunk_tokens=16) as st:
        summary = st.add_many(docs(40), batch_size=5)
        assert summary.added == 40 and len(st) == 40  # all durable when add_many returns
        assert [d for *_, ids in commits for d in ids] == [f"d{i}" for i in range(40)]  # in input order
        # one commit at a time
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(commits))
        # batch k+1 was embedded while batch k was being committed, in another thread
        overlapped = sum(1 for (c0, c1, *_) in commits[:-1] if any(c0 < e0 < c1 for e0, _ in emb.calls))
        assert overlapped >= len(commits) // 2, (commits, emb.calls)
        assert {name for _, _, name, _ in commits[:-1]} == {"ragstore-commit_0"}
    assert not [t for t in threading.enumerate() if t.name.startswith("ragstore-commit")]


def test_a_failed_commit_is_raised_and_keeps_the_batches_before_it(tmp_path, monkeypatch):
    real = ingest_mod.write_documents
    n = {"commits": 0}

    def failing_write(records, batch, dtype):
        n["commits"] += 1
        if n["commits"] == 3:
            raise ragstore.DiskFullError("the disk is full; free space and retry")
        real(records, batch, dtype)

    monkeypatch.setattr(ingest_mod, "write_documents", failing_write)
    path = tmp_path / "s"
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as st:
        with pytest.raises(ragstore.DiskFullError):
            st.add_many(docs(40), batch_size=5)
    monkeypatch.setattr(ingest_mod, "write_documents", real)
    with ragstore.open(path, embedder=HashEmbedder()) as st:
        assert sorted(st.doc_ids(), key=lambda d: int(d[1:])) == [f"d{i}" for i in range(10)]
        assert st.check().ok
        st.add_many(docs(40), replace=True)  # the rerun resumes
        assert len(st) == 40


def test_an_id_in_the_batch_being_committed_is_seen(tmp_path):
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder(), chunk_tokens=16) as st:
        many = docs(12) + [{"id": "d3", "text": "the last copy of d3 wins"}]
        s = st.add_many(many, batch_size=4, replace=True)
        assert (s.added, s.replaced) == (12, 1) and st.get("d3").text == "the last copy of d3 wins"
        with pytest.raises(ragstore.InvalidInputError, match="given twice"):
            st.add_many(docs(12, "e") + [{"id": "e2", "text": "again"}], batch_size=4)
        assert len(st) == 24 and st.get("e2").text.startswith("document 2")
