"""Hostile input and hostile disks: never a crash, never a raw exception, nothing lost.

Each case is met where a user meets it: the library call, and the command line
in a real child process (``main()``, so exit codes are the user's: 1 and 2 for
the user's or the environment's errors, 3 only for a bug in ragstore).
"""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ragstore
from helpers import HashEmbedder, wiki_docs
from ragstore import Doc, InvalidInputError, RagstoreError
from ragstore.engine import ingest as ingest_mod

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]

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


# ---------------------------------------------------------------------- item 4: hostile disks
# A full disk is a file size limit (RLIMIT_FSIZE, `ulimit -f`) set in a child
# process that ignores SIGXFSZ: writes past it fail with EFBIG, which ragstore
# treats as ENOSPC (LMDB reports both as an "Input/output error"). A read-only
# folder is chmod 555; root ignores modes, so a root test drops the capability
# that lets it (setpriv). A read-only file system is a read-only bind mount in a
# private mount namespace, where one can be made (root).
STEPS_CHILD = "steps"


def _limit_fsize(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _fill_child(path: str, what: str) -> dict:
    """Fill the disk under a store (a file size limit), then close and reopen it; each outcome recorded."""
    out: dict = {}
    docs = wiki_docs(300)
    emb = HashEmbedder()
    with ragstore.open(path, embedder=emb, chunk_tokens=32) as s:
        s.add_many([Doc(f"pre{i}", d["text"][:3000]) for i, d in enumerate(docs[:5])])
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    acked = [f"pre{i}" for i in range(5)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = ragstore.open(path, embedder=emb)
        try:
            if what == "commit":
                _limit_fsize(size + 96 * 1024)
                for i, d in enumerate(docs[5:], 5):
                    s.add(f"d{i}", d["text"][:3000])
                    acked.append(f"d{i}")
            elif what == "compact":  # the compacted copy of the LMDB file does not fit
                for i, d in enumerate(docs[5:200], 5):
                    s.add(f"d{i}", d["text"][:3000])
                    acked.append(f"d{i}")
                # a full disk shows at the copy's fsync (delayed allocation): injected there
                from ragstore.engine import maintenance

                real_fsync = maintenance.fsync_path

                def fsync(p: str) -> None:
                    if "compact.tmp" in p:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), p)
                    real_fsync(p)

                maintenance.fsync_path = fsync
                s.compact()
            else:  # "checkpoint": LMDB has room, the index file does not
                for i, d in enumerate(docs[5:200], 5):
                    s.add(f"d{i}", d["text"][:3000])
                    acked.append(f"d{i}")
                _limit_fsize(16 * 1024)
                s.checkpoint()
            out["write"] = "no error"
        except RagstoreError as e:
            out["write"] = f"{type(e).__name__}: {e}"
        try:
            s.close()
            out["close"] = "ok"
        except Exception as e:  # noqa: BLE001 - the point: close must not raise
            out["close"] = f"{type(e).__name__}: {e}"
    out["close_warnings"] = [f"{x.category.__name__}: {x.message}" for x in w]
    out["acked"] = len(acked)
    out["tmp_left"] = sorted(f for f in os.listdir(os.path.join(path, "index")) if f.endswith(".tmp"))
    out["tmp_left"] += sorted(f for f in os.listdir(path) if f.endswith(".tmp"))
    out["data_files"] = sorted(f for f in os.listdir(path) if f.endswith(".mdb"))
    # reopened at once, the disk still full: read-only, then read-write (whose open would checkpoint)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for ro in (True, False):
            key = "reopen_ro" if ro else "reopen_rw"
            try:
                with ragstore.open(path, embedder=emb, readonly=ro, checkpoint_every=10) as s:
                    found = all(d in s for d in acked)
                    hits = s.query(docs[0]["text"][:200], 3)
                    out[key] = {"documents": len(s), "all_acked": found, "ok": s.check().ok,
                                "hits_acked": bool(hits) and all(h.doc_id in acked for h in hits)}
                    if not ro:
                        try:
                            s.add("after", "a document added while the disk is full")
                            out[key]["add"] = "ok"
                        except RagstoreError as e:
                            out[key]["add"] = type(e).__name__
            except Exception as e:  # noqa: BLE001
                out[key] = f"{type(e).__name__}: {e}"
    out["reopen_warnings"] = [x.category.__name__ for x in w]
    return out


def run_child(*args: str, pre: list[str] | None = None, preexec=None) -> dict:
    p = subprocess.run([*(pre or []), sys.executable, str(HERE), *args], capture_output=True, text=True,
                       timeout=300, cwd=REPO, preexec_fn=preexec)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_disk_full_on_commit_is_disk_full_error_and_reopens(tmp_path):
    r = run_child("fill", str(tmp_path / "s"), "commit")
    assert r["write"].startswith("DiskFullError: disk full"), r
    assert "free space and rerun" in r["write"] and "nothing acknowledged was lost" in r["write"]
    assert r["close"] == "ok", r
    for key in ("reopen_ro", "reopen_rw"):
        got = r[key]
        assert isinstance(got, dict), f"{key}: {got}"
        assert got["documents"] == r["acked"] and got["all_acked"] and got["ok"] and got["hits_acked"], r
    assert r["reopen_rw"]["add"] in ("ok", "DiskFullError"), r


def test_failed_checkpoint_never_raises_from_close_and_reopens(tmp_path):
    r = run_child("fill", str(tmp_path / "s"), "checkpoint")
    # an explicit checkpoint() says what failed; close() only warns: the index is derived
    assert r["write"].startswith("DiskFullError: disk full") and "checkpoint" in r["write"], r
    assert r["close"] == "ok" and any(w.startswith("CheckpointWarning") for w in r["close_warnings"]), r
    assert r["tmp_left"] == [], "a failed checkpoint must give its space back"
    for key in ("reopen_ro", "reopen_rw"):
        got = r[key]
        assert isinstance(got, dict), f"{key}: {got}"
        assert got["documents"] == r["acked"] and got["all_acked"] and got["ok"], r


def test_disk_full_during_compact_leaves_the_store_as_it_was(tmp_path):
    r = run_child("fill", str(tmp_path / "s"), "compact")
    assert r["write"].startswith("DiskFullError: disk full"), r
    assert r["close"] == "ok" and r["tmp_left"] == [] and r["data_files"] == ["data.mdb", "lock.mdb"], r
    for key in ("reopen_ro", "reopen_rw"):
        got = r[key]
        assert isinstance(got, dict), f"{key}: {got}"
        assert got["documents"] == r["acked"] and got["all_acked"] and got["ok"], r


@pytest.fixture
def wiki_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "wiki.jsonl", [{"id": f"w{i}", "text": d["text"][:3000]}
                                                 for i, d in enumerate(wiki_docs(300))])


def _cli_ok(p: subprocess.CompletedProcess, code: int) -> None:
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_cli_disk_full_exits_1_and_store_reads(tmp_path, wiki_file):
    store = tmp_path / "s"
    head = write_jsonl(tmp_path / "head.jsonl", [{"id": "first", "text": "owls hunt small mammals at night"}])
    _cli_ok(cli("ingest", store, head, "--embedder", "test-hash"), 0)
    limit = os.path.getsize(store / "data.mdb") + 128 * 1024
    p = cli("ingest", store, wiki_file, preexec_fn=lambda: _limit_fsize(limit))
    _cli_ok(p, 1)
    assert "disk full" in p.stderr and "free space and rerun" in p.stderr
    _cli_ok(cli("check", store), 0)
    p = cli("query", store, "owls hunt small mammals at night", "--json")
    _cli_ok(p, 0)
    assert json.loads(p.stdout)["hits"][0]["doc_id"] == "first"


def test_store_path_under_a_file(tmp_path, wiki_file):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(InvalidInputError, match="a part of that path is a file"):
        ragstore.open(tmp_path / "f" / "s", embedder=HashEmbedder())
    p = cli("ingest", tmp_path / "f" / "s", wiki_file, "--embedder", "test-hash")
    _cli_ok(p, 1)
    assert "a part of that path is a file" in p.stderr
    p = cli("query", tmp_path / "f" / "s", "text")
    _cli_ok(p, 1)


def _drop_root_powers() -> list[str] | None:
    """A command prefix under which chmod binds this process, or None if there is none."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _readonly_child(path: str) -> dict:
    out: dict = {}
    for ro in (True, False):
        key = "ro" if ro else "rw"
        try:
            with ragstore.open(path, embedder=HashEmbedder(), readonly=ro) as s:
                out[key] = {"documents": len(s), "top": s.query("owls hunt", 1)[0].doc_id}
                try:
                    s.add("new", "a new document")
                    out[key]["add"] = "ok"
                except RagstoreError as e:
                    out[key]["add"] = f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001
            out[key] = f"{type(e).__name__}: {e}"
    try:
        ragstore.open(os.path.join(path, "sub"), embedder=HashEmbedder())
        out["create"] = "ok"
    except Exception as e:  # noqa: BLE001
        out["create"] = f"{type(e).__name__}: {e}"
    return out


def _small_store(path: Path) -> None:
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16) as s:
        s.add("owls", "owls hunt small mammals at night")
        s.add("gulls", "gulls eat fish along the shore")


def _check_readonly_outcome(r: dict) -> None:
    assert r["ro"]["documents"] == 2 and r["ro"]["top"] == "owls", r
    assert r["ro"]["add"].startswith("ReadOnlyError"), r
    assert isinstance(r["rw"], dict) and r["rw"]["documents"] == 2, r  # reading needs no write access
    assert r["rw"]["add"].startswith("StoreNotWritableError") and "--read-only" in r["rw"]["add"], r
    assert r["create"].startswith("StoreNotWritableError"), r
    assert "copied while a writer" not in json.dumps(r)


@pytest.mark.parametrize("files_too", [False, True], ids=["folder", "folder-and-files"])
def test_readonly_folder_reads_and_refuses_writes_clearly(tmp_path, files_too):
    pre = _drop_root_powers()
    if pre is None:
        pytest.skip("running as root without setpriv: chmod cannot make a folder read-only for root")
    store = tmp_path / "s"
    _small_store(store)
    modes = []
    for p in [store, store / "index", *(store.iterdir() if files_too else [])]:
        modes.append((p, p.stat().st_mode))
    try:
        for p, _ in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        _check_readonly_outcome(run_child("readonly", str(store), pre=pre))
        # the command line, as the user meets it
        env_pre = pre or []
        q = subprocess.run([*env_pre, sys.executable, "-c", _CLI, "query", str(store), "owls hunt", "--json"],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        _cli_ok(q, 0)
        assert json.loads(q.stdout)["hits"][0]["doc_id"] == "owls"
        f = write_jsonl(tmp_path / "d.jsonl", [{"id": "x", "text": "some text"}])
        p = subprocess.run([*env_pre, sys.executable, "-c", _CLI, "ingest", str(store), str(f)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        _cli_ok(p, 1)
        assert "cannot be written" in p.stderr and "copied while a writer" not in p.stderr
    finally:
        for p, m in modes:
            p.chmod(m)


def _can_bind_readonly() -> bool:
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        return False
    return subprocess.run([unshare, "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


def test_readonly_file_system(tmp_path):
    if not _can_bind_readonly():
        pytest.skip("a read-only bind mount needs root and mount namespaces (unshare -m), not available here")
    store = tmp_path / "s"
    _small_store(store)
    cmd = (f"mount --bind -o ro {store} {store} && {sys.executable} {HERE} readonly {store}")
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["ro"]["documents"] == 2 and r["rw"]["add"].startswith("StoreNotWritableError"), r
    assert "Read-only file system" in r["create"] or r["create"].startswith("StoreNotWritableError"), r


def test_cli_prints_ragstore_warnings_as_messages(tmp_path):
    """A warning (here: a damaged index checkpoint, rebuilt) reads like the CLI's errors, not like Python's
    ``file:line: IndexDamageWarning: ...`` with a source line"""
    store = tmp_path / "s"
    _small_store(store)
    shard = next((store / "index").glob("*.usearch"))
    with open(shard, "r+b") as f:
        f.write(b"garbage")
    p = cli("query", store, "owls hunt")
    _cli_ok(p, 0)
    assert p.stderr.startswith("warning: the vector index checkpoint") and "IndexDamageWarning" not in p.stderr


def test_storage_error_classification(tmp_path):
    import lmdb

    from ragstore.engine.storage import storage_error

    def kind(e: BaseException) -> str | None:
        err = storage_error(e, str(tmp_path), "testing", lost="nothing lost")
        return None if err is None else type(err).__name__

    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        assert kind(OSError(code, os.strerror(code))) == "DiskFullError"
        assert kind(lmdb.Error(f"mdb_txn_commit: {os.strerror(code)}")) == "DiskFullError"
    for code in (errno.EROFS, errno.EACCES):
        assert kind(OSError(code, os.strerror(code))) == "StoreNotWritableError"
    # LMDB says "Input/output error" for a full disk too: a full disk only where space is short
    assert kind(lmdb.Error("mdb_txn_commit: Input/output error")) == "StorageError"
    assert kind(RuntimeError("Failed to serialize into stream")) == "StorageError"
    assert kind(lmdb.PanicError("mdb_txn_begin: MDB_PANIC: Update of meta page failed")) == "StorageError"
    for other in (lmdb.CorruptedError("mdb_get: MDB_CORRUPTED"), RuntimeError("something else"),
                  OSError(errno.ENOENT, "No such file or directory"), ValueError("x")):
        assert kind(other) is None, other  # damage and bugs stay what they are


def test_storage_errors_are_exported():
    for name in ("StorageError", "DiskFullError", "StoreNotWritableError", "CheckpointWarning"):
        assert name in ragstore.__all__ and hasattr(ragstore, name)
    assert issubclass(ragstore.DiskFullError, ragstore.StorageError)
    assert issubclass(ragstore.StorageError, RagstoreError)
    assert errno.EFBIG  # treated as ENOSPC: see ragstore/engine/storage.py


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "fill":
        print(json.dumps(_fill_child(sys.argv[2], sys.argv[3])))
    elif role == "readonly":
        print(json.dumps(_readonly_child(sys.argv[2])))
