"""Hostile input and hostile disks: never a crash, never a raw exception, nothing lost.

Each case is met where a user meets it: the library call, and the command line
in a real child process (``main()``, so exit codes are the user's: 1 and 2 for
the user's or the environment's errors, 3 only for a bug in ragstore).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import ragstore
from helpers import HashEmbedder
from ragstore import Doc, InvalidInputError, RagstoreError
from ragstore.engine import ingest as ingest_mod

REPO = Path(__file__).resolve().parents[1]

# The command line in a child process, with the test hash embedder registered
# under the name its stores record (the CLI resolves a store's embedder by name).
_CLI = (
    "import sys; from ragstore import embed; from ragstore.testing import HashEmbedder; "
    "embed.register('test-hash', lambda arg: HashEmbedder()); "
    "from ragstore_cli.app import main; sys.argv = ['ragstore', *sys.argv[1:]]; main()"
)


def cli(*args: object, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(s: ragstore.Store) -> tuple:
    return len(s), sorted(s.doc_ids()), s.sources(), s.stats().chunks


# ---------------------------------------------------------------------- item 5: lengths in bytes, lone surrogates
LONG_SOURCES = {
    "cjk": "漢" * 200,  # 200 characters, 600 bytes: over LMDB's 511-byte keys
    "emoji": "🦉" * 130,  # 130 characters, 520 bytes
}


@pytest.mark.parametrize("kind", sorted(LONG_SOURCES))
def test_source_short_in_characters_long_in_bytes_is_refused(store, kind):
    source = LONG_SOURCES[kind]
    assert len(source) <= 200 and len(source.encode()) > 511
    store.add("keep", "a document that stays")
    before = snapshot(store)
    with pytest.raises(InvalidInputError, match="bytes long in UTF-8"):
        store.add("x", "some text", source=source)
    with pytest.raises(InvalidInputError, match="bytes long in UTF-8"):
        store.add_many([Doc("y", "other text", source=source)])
    with pytest.raises(InvalidInputError, match="bytes long in UTF-8"):
        store.query("text", sources=[source])
    assert snapshot(store) == before and store.check().ok
    ok = "é" * 200  # 400 bytes: within the limit
    store.add("z", "fine text", source=ok)
    assert store.get("z").source == ok


@pytest.mark.parametrize("where", ["id", "source", "text", "meta value", "meta key", "nested meta"])
def test_lone_surrogates_are_refused(store, where):
    doc = {"id": "d", "text": "some text", "source": "src", "meta": {"k": "v"}}
    bad = "bad \ud800 value"
    if where == "id":
        doc["id"] = bad
    elif where == "source":
        doc["source"] = bad
    elif where == "text":
        doc["text"] = bad
    elif where == "meta value":
        doc["meta"] = {"k": bad}
    elif where == "meta key":
        doc["meta"] = {bad: 1}
    else:
        doc["meta"] = {"a": [{"b": bad}]}
    before = snapshot(store)
    with pytest.raises(InvalidInputError, match="surrogate"):
        store.add(doc["id"], doc["text"], source=doc["source"], meta=doc["meta"])
    reported = []
    summary = store.add_many([doc], on_invalid=lambda i, doc_id, e: reported.append(str(e)))
    assert summary.skipped == 1 and "surrogate" in reported[0]
    assert snapshot(store) == before


def test_lone_surrogates_in_reads_are_refused(store):
    store.add("a", "a document")
    for call in (lambda: store.get("\udc80"), lambda: store.delete("\udc80"),
                 lambda: store.query("a", sources=["\ud800"]), lambda: list(store.doc_ids(source="\ud800"))):
        with pytest.raises(InvalidInputError, match="surrogate"):
            call()


def test_cli_source_long_in_bytes_is_reported_not_a_crash(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "fine text", "source": "漢" * 200},
                                          {"id": "b", "text": "other fine text"}])
    p = cli("ingest", tmp_path / "s", f, "--embedder", "test-hash")
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith(f"{f}:1: ") and "bytes long in UTF-8" in p.stderr
    p = cli("ingest", tmp_path / "s", f, "--embedder", "test-hash", "--on-error", "stop")
    assert p.returncode == 1 and "bytes long in UTF-8" in p.stderr and "internal error" not in p.stderr


# ---------------------------------------------------------------------- item 7: meta is strict JSON
BAD_META = {
    "nan": {"v": math.nan},
    "inf": {"v": math.inf},
    "-inf in a list": {"v": [1.0, -math.inf]},
    "nested nan": {"a": {"b": [{"c": float("nan")}]}},
    "int key": {1: "x"},
    "nested int key": {"a": {2: "x"}},
    "set": {"v": {1, 2}},
    "object": {"v": object()},
    "too deep": {"v": __import__("functools").reduce(lambda acc, _: [acc], range(40), 1)},
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_meta_must_be_strict_json(store, case):
    store.add("keep", "a document that stays")
    before = snapshot(store)
    with pytest.raises(InvalidInputError) as ei:
        store.add("x", "some text", meta=BAD_META[case])
    assert "meta" in str(ei.value)
    assert snapshot(store) == before and store.check().ok


def test_meta_json_values_and_bytes_still_accepted(store):
    meta = {"s": "ü", "i": -5, "big": 2**63, "f": 1.5, "t": True, "n": None, "l": [1, [2, {"x": "y"}]],
            "b": b"\x00\xff", "deep": __import__("functools").reduce(lambda acc, _: [acc], range(30), 1)}
    store.add("ok", "fine text", meta=meta)
    assert store.get("ok").meta == meta


@pytest.fixture
def nan_store(tmp_path, monkeypatch):
    """A store holding NaN and infinity in a document's meta, as stores written before the check can."""
    path = tmp_path / "nan"
    with monkeypatch.context() as m:
        m.setattr(ingest_mod, "check_meta", lambda meta: dict(meta or {}))
        with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as s:
            s.add("n", "owls hunt at night", meta={"v": math.nan, "w": [math.inf], "ok": 1})
            s.add("m", "gulls eat fish", meta={"ok": 2})
    return path


def test_store_holding_nan_still_reads(nan_store):
    with ragstore.open(nan_store, embedder=HashEmbedder()) as s:
        assert math.isnan(s.get("n").meta["v"])
        hits = s.query("owls hunt at night", 2)
        assert hits[0].doc_id == "n"
        assert s.check().ok


def test_cli_query_json_is_valid_json_with_nan_in_store(nan_store):
    p = cli("query", nan_store, "owls hunt at night", "-k", "2", "--json")
    assert p.returncode == 0, p.stderr
    assert "NaN" not in p.stdout and "Infinity" not in p.stdout
    out = json.loads(p.stdout, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    hit = out["hits"][0]
    assert hit["doc_id"] == "n" and hit["meta"] == {"v": None, "w": [None], "ok": 1}


def test_cli_ingest_nan_meta_is_reported(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"id": "a", "text": "fine text", "meta": {"v": NaN}}\n{"id": "b", "text": "more text"}\n')
    p = cli("ingest", tmp_path / "s", f, "--embedder", "test-hash")
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith(f"{f}:1: ") and "JSON cannot represent" in p.stderr
    p = cli("query", tmp_path / "s", "fine text", "--json")
    assert p.returncode == 0 and [h["doc_id"] for h in json.loads(p.stdout)["hits"]] == ["b"]


def test_errors_are_ragstore_errors():
    assert issubclass(InvalidInputError, RagstoreError)


# ---------------------------------------------------------------------- item 6: an id twice in one add_many
@pytest.mark.parametrize("batch_size", [1000, 2])
def test_repeated_id_in_one_call_raises_before_its_copy_commits(store, batch_size):
    store.add("old", "a document from before")
    docs = [Doc(f"n{i}", f"new document number {i}") for i in range(5)]
    docs.insert(3, Doc("n1", "a second copy of n1"))  # #3 repeats #1
    with pytest.raises(InvalidInputError) as ei:
        store.add_many(docs, batch_size=batch_size)
    msg = str(ei.value)
    assert not isinstance(ei.value, ragstore.AlreadyExistsError)
    assert "'n1' is given twice in this call" in msg and "again as document #3" in msg
    assert "3 documents of this call" in msg, msg  # n0, n1, n2 were before the repeat
    # the documents before the repeat are committed, as before any bad document; the copy is not
    assert sorted(store.doc_ids()) == ["n0", "n1", "n2", "old"]
    assert store.get("n1").text == "new document number 1" and store.check().ok


def test_repeated_id_is_reported_with_on_invalid_and_the_rest_goes_in(store):
    docs = [Doc(f"n{i}", f"new document number {i}") for i in range(5)]
    docs.insert(3, Doc("n1", "a second copy of n1"))
    seen = []
    summary = store.add_many(docs, batch_size=2, on_invalid=lambda i, doc_id, e: seen.append((i, doc_id, str(e))))
    assert [(i, d) for i, d, _ in seen] == [(3, "n1")] and "given twice" in seen[0][2]
    assert (summary.added, summary.skipped, summary.documents) == (5, 1, 6)
    assert sorted(store.doc_ids()) == [f"n{i}" for i in range(5)]
    assert store.get("n1").text == "new document number 1" and store.check().ok


def test_repeated_id_with_replace_last_copy_wins(store):
    docs = [Doc("a", "first copy"), Doc("b", "other"), Doc("a", "last copy")]
    summary = store.add_many(docs, replace=True)
    assert store.get("a").text == "last copy" and (summary.added, summary.replaced) == (2, 1)
    assert store.check().ok


def test_id_existing_before_the_call_is_still_already_exists(store):
    store.add("a", "before")
    with pytest.raises(ragstore.AlreadyExistsError):
        store.add_many([Doc("b", "new"), Doc("a", "again")])
    assert sorted(store.doc_ids()) == ["a", "b"] and store.get("a").text == "before"
