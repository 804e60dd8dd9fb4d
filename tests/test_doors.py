"""The library's input doors under random input: every call succeeds or raises a RagstoreError.

A hypothesis test throws random ids, sources, metadata, texts, k and vectors at
``add``, ``add_many``, ``delete``, ``delete_many``, ``get`` and ``query``: no call
may raise anything but a :class:`ragstore.RagstoreError` subclass (no
``TypeError``, ``UnicodeEncodeError``, ``lmdb.BadValsizeError`` ...), and the
store must pass ``check()`` afterwards. A second test runs ``check()`` while
another process writes, which must report no false alarms.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ragstore
from helpers import HashEmbedder
from ragstore import Doc, RagstoreError

EMB = HashEmbedder()
DIM = EMB.dim
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
HERE = Path(__file__).resolve().parent

WORDS = "owls hunt at night gulls eat fish rivers mountains city war king".split()
HOSTILE_STR = ["", " ", "\ud800", "a\udc80b", "\x00", "a\x00b", "é" * 241, "漢" * 200, "x" * 481, "🦉" * 130]
plain = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
strs = st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.text(max_size=40), st.sampled_from(HOSTILE_STR))
anything = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=8), st.just([1, 2]), st.just({"x": 1}))
ids = st.one_of(strs, anything)
sources = st.one_of(st.none(), st.sampled_from(["s1", "s2"]), strs, anything)
leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
                 st.binary(max_size=4), st.sampled_from(["\ud800", math.nan, math.inf, object()]))
json_like = st.recursive(leaf, lambda ch: st.lists(ch, max_size=3) | st.dictionaries(
    st.one_of(st.text(max_size=4), st.integers(0, 3), st.sampled_from(["\udfff"])), ch, max_size=3), max_leaves=8)
deep = st.integers(30, 40).map(lambda n: {"d": __import__("functools").reduce(lambda a, _: [a], range(n), 1)})
metas = st.one_of(st.none(), st.dictionaries(st.text(max_size=6), json_like, max_size=4), deep,
                  st.just({1: "x"}), st.just({"s": {1, 2}}), st.just([1, 2]), st.just("meta"))
texts = st.one_of(plain, st.text(max_size=80), st.sampled_from(["", "   ", "\x01\x02", "ok \ud800", "\n\t"]),
                  st.binary(max_size=30), st.integers())
ks = st.one_of(st.integers(-2, 40), st.none(), st.floats(), st.sampled_from(["3", True, 2**64, np.int64(2)]))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
vectors = st.one_of(
    st.lists(floats, min_size=DIM, max_size=DIM).map(np.array),
    st.sampled_from([np.zeros(DIM), np.ones(DIM - 1), np.ones((2, DIM)), np.full(DIM, np.nan), np.array(["x"] * DIM),
                     np.ones((0, DIM)), 5, "vector", [1, "a"]]),
)
doc_vectors = st.one_of(st.none(), st.sampled_from([np.ones((1, DIM)), np.ones((3, DIM)), np.full((1, DIM), np.inf),
                                                    np.ones((1, DIM + 1)), "v"]))
docs = st.builds(lambda i, t, s, m, v: Doc(i, t, s, m, v), ids, texts, sources, metas, doc_vectors)
many = st.one_of(st.lists(docs, max_size=5), st.lists(st.tuples(ids, texts), max_size=4),
                 st.sampled_from([None, 5, "abc", [5], [("a",)], [{"id": "x"}], {"id": "a", "text": "t"}]))
ops = st.one_of(
    st.tuples(st.just("add"), docs, st.booleans()),
    st.tuples(st.just("add_many"), many, st.booleans(), st.sampled_from([None, "report"]),
              st.one_of(st.integers(-1, 6), st.just("2"))),
    st.tuples(st.just("delete"), ids),
    st.tuples(st.just("delete_many"), st.one_of(st.lists(ids, max_size=3), anything), st.booleans()),
    st.tuples(st.just("get"), ids),
    st.tuples(st.just("query"), st.one_of(plain, texts), ks,
              st.one_of(st.none(), st.lists(sources, max_size=2), sources),
              st.one_of(st.none(), st.lists(ids, max_size=2), ids)),
    st.tuples(st.just("query_vector"), vectors, ks),
)


def apply(s: ragstore.Store, op: tuple) -> None:
    name = op[0]
    if name == "add":
        d, replace = op[1], op[2]
        s.add(d.id, d.text, source=d.source, meta=d.meta, vectors=d.vectors, replace=replace)
    elif name == "add_many":
        _, items, replace, report, batch = op
        s.add_many(items, replace=replace, batch_size=batch,
                   on_invalid=(lambda i, doc_id, e: None) if report else None)
    elif name == "delete":
        s.delete(op[1])
    elif name == "delete_many":
        s.delete_many(op[1], missing_ok=op[2])
    elif name == "get":
        s.get(op[1])
    elif name == "query":
        _, q, k, srcs, excl = op
        s.query(q, k, sources=srcs, exclude_docs=excl)
    else:
        s.query(op[1], op[2])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(ops, min_size=1, max_size=10))
def test_every_door_succeeds_or_raises_a_ragstore_error(seq):
    d = tempfile.mkdtemp(prefix="ragstore-doors-", dir=SCRATCH)
    try:
        with ragstore.open(os.path.join(d, "s"), embedder=EMB, chunk_tokens=8, sync=False) as s:
            s.add("a", "owls hunt at night", source="s1", meta={"n": 1})
            for op in seq:
                try:
                    apply(s, op)
                except RagstoreError:
                    pass  # refused with a message: what a door may do
            r = s.check()
            assert r.ok, r.problems
        with ragstore.open(os.path.join(d, "s"), embedder=EMB) as s:
            assert s.check().ok
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def test_check_while_another_process_writes_reports_no_false_alarms(tmp_path):
    """regression: check() on a store another process writes must not mistake its work for damage"""
    path = tmp_path / "s"
    with ragstore.open(path, embedder=EMB, chunk_tokens=32) as s:
        s.add("seed", "a first document so the store exists")
    # a writer that checkpoints often (new shard files replace old ones) and deletes
    w = subprocess.Popen([sys.executable, str(HERE / "procs.py"), "writer", str(path), "w", "150",
                          "--delete-every", "7", "--checkpoint-every", "40"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reports = []
    try:
        deadline = time.monotonic() + 120
        with ragstore.open(path, embedder=EMB, readonly=True) as s:
            while w.poll() is None and time.monotonic() < deadline:
                r = s.check()
                reports.append(r)
                assert r.ok, f"check() raised a false alarm while a writer ran: {r.problems}"
    finally:
        if w.poll() is None:
            w.kill()
        out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err[-2000:]
    assert len(reports) >= 3, "the writer finished before check() could run beside it"
    with ragstore.open(path, embedder=EMB) as s:
        assert s.check().ok
