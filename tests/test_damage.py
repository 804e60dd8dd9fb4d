"""Damaged files: a store must never crash the process, whatever bytes are wrong.

Each scenario damages a copy of a small store and runs, in a child process, what
a user would: open, queries, get, check, check(fix=True), reopen. The parent
asserts on the child's exit status (a signal, SIGSEGV or SIGBUS, is a failure
whatever the scenario) and on the outcome it prints:

- ``recovered``: after check(fix=True) (or with nothing to fix) the store is
  sound: check() is ok and queries answer;
- ``refused``: ragstore raised CorruptStoreError saying what is wrong;
- ``bad: ...``: any other exception, or a store still unsound after the fix.

``python -m pytest -m slow tests/test_damage.py`` runs 30 random positions per
kind of damage and prints the counts.

    python tests/test_damage.py child STORE   (the child; prints one JSON line)
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ragstore  # noqa: E402
from helpers import HashEmbedder, wiki_docs  # noqa: E402
from ragstore.errors import CorruptStoreError  # noqa: E402

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
PAGE = 4096


# ---------------------------------------------------------------------- the child
def _child(path: str) -> dict:
    """What a user does with a store, each step's outcome recorded; never lets a signal pass unseen."""
    emb = HashEmbedder()
    out: dict = {"steps": []}
    q_texts = ["the history of the war", "a city in europe", "music and film"]

    def use(s: ragstore.Store) -> None:
        for q in q_texts:
            s.query(q, 5)
            s.query(q, 5, exact=True)
        for doc_id in list(s.doc_ids())[:10]:
            s.get(doc_id)

    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s = ragstore.open(path, embedder=emb)
        out["warned"] = [str(x.message)[:200] for x in w]
        with s:
            try:
                use(s)
                out["steps"].append("used")
            except CorruptStoreError as e:
                out["steps"].append(f"use refused: {str(e)[:200]}")
            r = s.check()
            out["check"] = {"ok": r.ok, "problems": r.problems[:8]}
            r = s.check(fix=True)
            out["fix"] = {"ok": r.ok, "fixed": r.fixed, "problems": r.problems[:8]}
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with ragstore.open(path, embedder=emb) as s:
                use(s)
                r = s.check()
                out["after"] = {"ok": r.ok, "problems": r.problems[:8], "documents": r.documents}
        out["warned_after"] = [str(x.message)[:200] for x in w]
        out["outcome"] = "recovered" if r.ok and not out["warned_after"] else "bad: unsound after the fix"
    except CorruptStoreError as e:
        out["error"] = str(e)
        out["outcome"] = "refused"
    except Exception as e:  # noqa: BLE001 - the point: anything else is a failure to report
        out["error"] = f"{type(e).__name__}: {e}"
        out["outcome"] = f"bad: {type(e).__name__}"
    return out


# ---------------------------------------------------------------------- the parent
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small store of two sources, closed (index checkpointed)."""
    path = tmp_path_factory.mktemp("damage") / "base"
    docs = wiki_docs(40)
    with ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=32) as s:
        s.add_many([ragstore.Doc(f"d{i}", d["text"][:2500], source=("a", "b")[i % 2]) for i, d in enumerate(docs)])
    return path


def run_child(path: Path) -> dict:
    p = subprocess.run([sys.executable, str(HERE), "child", str(path)], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode >= 0, f"the child died of signal {-p.returncode} on {path}: {p.stderr[-2000:]}"
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def copy_of(base: Path, tmp_path: Path, name: str = "s") -> Path:
    dst = tmp_path / name
    shutil.copytree(base, dst)
    return dst


def damage_bytes(path: str, rnd: random.Random, *, n: int = 20, lo: int = 0, hi: int | None = None) -> int:
    size = os.path.getsize(path)
    start = rnd.randrange(lo, (hi or size) - n)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(rnd.randrange(256) for _ in range(n)))
    return start


def damage(store: Path, kind: str, seed: int) -> None:
    rnd = random.Random(seed)
    data = str(store / "data.mdb")
    if kind == "shard":
        damage_bytes(rnd.choice(sorted(glob.glob(str(store / "index" / "*.usearch")))), rnd, lo=64)
    elif kind == "truncate":
        os.truncate(data, rnd.randrange(2, os.path.getsize(data) // PAGE) * PAGE - rnd.choice([0, 1, 100]))
    elif kind == "mdb":
        damage_bytes(data, rnd)
    elif kind == "records":  # bytes where a chunk's text is: record damage rather than the big tokenizer record
        blob = open(data, "rb").read()
        words = [w for w in wiki_docs(40)[rnd.randrange(40)]["text"][:2500].split() if len(w) > 6]
        for _ in range(50):
            at = blob.find(rnd.choice(words).encode())
            if at > 0:
                break
        damage_bytes(data, rnd, n=rnd.choice([4, 20, 200]), lo=max(0, at - 64), hi=min(len(blob), at + 300))
    else:
        raise ValueError(kind)


def outcome_ok(out: dict) -> bool:
    return out["outcome"] in ("recovered", "refused")


# ---------------------------------------------------------------------- item 1: index shards
def test_damaged_shard_is_detected_and_rebuilt(base, tmp_path):
    for seed in range(6):
        store = copy_of(base, tmp_path, f"s{seed}")
        damage(store, "shard", seed)
        out = run_child(store)  # before: SIGSEGV at the first query for some of these
        assert out["outcome"] == "recovered", out
        assert out["warned"] and "damaged" in out["warned"][0], out


def test_shard_digest_mismatch_rebuilds_and_check_reports_the_file(base, tmp_path):
    store = copy_of(base, tmp_path)
    with ragstore.open(store, embedder=HashEmbedder(), readonly=True) as s:
        want = [[h.chunk_id for h in s.query(q, 5)] for q in ("war", "music", "city")]
    f = sorted(glob.glob(str(store / "index" / "*.usearch")))[0]
    damage_bytes(f, random.Random(1), lo=64)
    with pytest.warns(ragstore.engine.index.IndexDamageWarning, match="digest differs"):
        s = ragstore.open(store, embedder=HashEmbedder(), readonly=True)
    with s:
        assert [[h.chunk_id for h in s.query(q, 5)] for q in ("war", "music", "city")] == want
        rep = s.check()  # readonly: the in-memory index is sound, the file on disk is not
        assert not rep.ok and any("is damaged" in p and os.path.basename(f) in p for p in rep.problems), rep
    with ragstore.open(store, embedder=HashEmbedder()) as s:  # writable: a sound checkpoint is saved at open
        assert s.check().ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ragstore.open(store, embedder=HashEmbedder(), readonly=True) as s:
            assert s.check().ok


def test_manifest_without_digests_still_loads(base, tmp_path):
    store = copy_of(base, tmp_path)
    mpath = store / "index" / "manifest.msgpack"
    man = msgpack.unpackb(mpath.read_bytes(), raw=False)
    assert set(man["sums"]) == set(man["shards"].values())
    del man["sums"], man["sum"]  # as ragstore 0.1 wrote it
    mpath.write_bytes(msgpack.packb(man, use_bin_type=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ragstore.open(store, embedder=HashEmbedder()) as s:
            assert s.check().ok and s.stats().index_vectors == s.stats().chunks
            s.checkpoint()
    man = msgpack.unpackb(mpath.read_bytes(), raw=False)
    assert set(man["sums"]) == set(man["shards"].values())  # the next checkpoint records them


def test_check_finds_a_broken_graph_by_self_recall(base, tmp_path):
    """A shard whose file is intact (digest matches) but whose graph does not fit the records."""
    from usearch.index import Index

    from ragstore.engine.index import file_sum

    store = copy_of(base, tmp_path)
    mpath = store / "index" / "manifest.msgpack"
    man = msgpack.unpackb(mpath.read_bytes(), raw=False)
    fname = man["shards"]["a"]
    ix = Index(ndim=32, metric="cos", dtype="f16")
    ix.load(str(store / "index" / fname))
    keys = np.asarray(ix.keys, dtype=np.uint64)
    wrong = Index(ndim=32, metric="cos", dtype="f16")  # the same keys over other vectors
    wrong.add(keys, np.random.default_rng(0).standard_normal((len(keys), 32)).astype(np.float32), threads=1)
    wrong.save(str(store / "index" / fname))
    man["sums"][fname] = file_sum(str(store / "index" / fname))
    mpath.write_bytes(msgpack.packb(man, use_bin_type=True))
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        rep = s.check()
        assert not rep.ok and any("find themselves" in p and "'a'" in p for p in rep.problems), rep.problems
        rep = s.check(fix=True)
        assert rep.ok and rep.fixed
        assert s.check().ok and s.check().problems == []


# ---------------------------------------------------------------------- item 2: truncated data.mdb
def test_truncated_data_mdb_is_refused_at_open(base, tmp_path):
    for seed in range(4):
        store = copy_of(base, tmp_path, f"s{seed}")
        damage(store, "truncate", seed)
        out = run_child(store)  # before: SIGBUS at a query, check or check --fix
        assert out["outcome"] == "refused" and "truncated" in out["error"] and "backup" in out["error"], out


def test_cli_check_exits_1_on_a_truncated_file(base, tmp_path):
    store = copy_of(base, tmp_path)
    damage(store, "truncate", 0)
    for fix in ([], ["--fix"]):
        p = _cli("check", str(store), *fix)
        assert p.returncode == 1, (p.returncode, p.stderr[-1500:])
        assert "truncated" in p.stdout + p.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ragstore", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


# ---------------------------------------------------------------------- item 3: damaged bytes in data.mdb
def _chunk_text_offset(store: Path, doc_id: str) -> tuple[int, int]:
    """Where in data.mdb a chunk's text of ``doc_id`` is, and that chunk's id."""
    with ragstore.open(store, embedder=HashEmbedder(), readonly=True) as s:
        doc = s.get(doc_id)
        cid = doc.first_chunk_id + 1
        text = s.get_chunk(cid).text
    at = (store / "data.mdb").read_bytes().find(text[:40].encode())
    assert at > 0
    return at, cid


def test_damaged_chunk_record_query_check_and_salvage(base, tmp_path):
    store = copy_of(base, tmp_path)
    at, cid = _chunk_text_offset(store, "d3")
    with open(store / "data.mdb", "r+b") as f:
        f.seek(at + 5)
        f.write(b"\xff\xfe\xff")  # not UTF-8: decoding the chunk failed with UnicodeDecodeError
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        with pytest.raises(CorruptStoreError, match="ragstore check"):
            s.get("d3")
        with pytest.raises(CorruptStoreError, match="damaged"):
            s.get_chunk(cid)
        rep = s.check()
        assert not rep.ok and any(p.startswith("document 'd3'") for p in rep.problems), rep.problems
        n_before = len(s)
    p = _cli("check", str(store))  # before: exit 3 (an internal error)
    assert p.returncode == 1 and "d3" in p.stdout, (p.returncode, p.stdout, p.stderr[-1500:])
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        rep = s.check(fix=True)
        assert rep.fixed and not rep.ok  # documents were lost: the report says which
        assert any("lost 1 damaged documents: 'd3'" in p for p in rep.problems), rep.problems
        assert any("data.mdb.damaged-" in p for p in rep.problems)
    assert glob.glob(str(store / "data.mdb.damaged-*"))
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        assert s.check().ok and len(s) == n_before - 1 and "d3" not in s
        assert s.get("d4").text and s.query("the history", 5)
        s.add("new", "a document added after the salvage")
        assert s.check().ok and "new" in s


def test_query_hitting_a_damaged_chunk_raises_corrupt_store_error(base, tmp_path):
    store = copy_of(base, tmp_path)
    at, cid = _chunk_text_offset(store, "d5")
    with ragstore.open(store, embedder=HashEmbedder(), readonly=True) as s:
        q = s.vectors("d5")[1]  # the damaged chunk's own vector: it is the first hit
    with open(store / "data.mdb", "r+b") as f:
        f.seek(at + 2)
        f.write(b"\xc3\x28\xa0\xa1")
    with ragstore.open(store, embedder=HashEmbedder(), readonly=True) as s:
        with pytest.raises(CorruptStoreError, match="ragstore check --fix"):
            s.query(q, 3)


def test_salvage_refuses_while_another_process_has_the_store_open(base, tmp_path):
    store = copy_of(base, tmp_path)
    at, _ = _chunk_text_offset(store, "d7")
    with open(store / "data.mdb", "r+b") as f:
        f.seek(at + 1)
        f.write(b"\xff\xff")
    other = subprocess.Popen([sys.executable, "-c", "import sys, ragstore, time; s = ragstore.open(sys.argv[1], "
                              "readonly=True, create=False); print('open', flush=True); time.sleep(60)", str(store)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "open"
        with ragstore.open(store, embedder=HashEmbedder()) as s:
            with pytest.raises(CorruptStoreError, match="other processes have it open"):
                s.check(fix=True)
    finally:
        other.kill()
        other.wait()


def test_damaged_tokenizer_record_is_restored_by_the_salvage(base, tmp_path):
    import lmdb

    store = copy_of(base, tmp_path)
    env = lmdb.open(str(store), max_dbs=8)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        tok = bytearray(txn.get(b"tokenizer", db=meta))
        tok[len(tok) // 2] = 0xFF  # not UTF-8 any more
        txn.put(b"tokenizer", bytes(tok), db=meta)
    env.close()
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        rep = s.check()
        assert not rep.ok and any("tokenizer" in p for p in rep.problems), rep.problems
        rep = s.check(fix=True)
        assert rep.fixed and any("restored the damaged tokenizer" in p for p in rep.problems), rep.problems
    with ragstore.open(store, embedder=HashEmbedder()) as s:
        assert s.check().ok and len(s) == 40 and s.chunk("some text to cut")


def test_damaged_config_record_is_refused_clearly(base, tmp_path):
    import lmdb

    store = copy_of(base, tmp_path)
    env = lmdb.open(str(store), max_dbs=8)
    meta = env.open_db(b"meta")  # before the write txn: open_db inside one waits for it forever
    with env.begin(write=True) as txn:
        txn.put(b"config", b"\xc1\xc1", db=meta)
    env.close()
    with pytest.raises(CorruptStoreError, match="configuration record .* damaged.*restore a backup"):
        ragstore.open(store, embedder=HashEmbedder())
    p = _cli("check", str(store), "--fix")
    assert p.returncode == 1 and "restore a backup" in p.stdout + p.stderr, (p.returncode, p.stderr[-1500:])


@pytest.mark.parametrize("kind", ["mdb", "records"])
def test_random_damage_a_few_positions(base, tmp_path, kind):
    for seed in range(3):
        store = copy_of(base, tmp_path, f"s{seed}")
        damage(store, kind, seed)
        out = run_child(store)  # before: UnicodeDecodeError, msgpack ValueError, lmdb errors
        assert outcome_ok(out), out


# ---------------------------------------------------------------------- many positions (slow)
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["shard", "truncate", "mdb", "records"])
def test_random_damage_many_positions(base, tmp_path, kind, capsys):
    counts: Counter = Counter()
    bad = []
    for seed in range(100, 130):
        store = copy_of(base, tmp_path, f"s{seed}")
        damage(store, kind, seed)
        p = subprocess.run([sys.executable, str(HERE), "child", str(store)], capture_output=True, text=True,
                           timeout=300, cwd=REPO)
        if p.returncode < 0:
            counts["crashed"] += 1
            bad.append((seed, f"signal {-p.returncode}"))
            continue
        if p.returncode == 0:
            out = json.loads(p.stdout.strip().splitlines()[-1])
        else:
            out = {"outcome": f"bad: exit {p.returncode}"}
        counts[out["outcome"] if outcome_ok(out) else "bad"] += 1
        if not outcome_ok(out):
            bad.append((seed, out))
        shutil.rmtree(store)
    with capsys.disabled():
        print(f"\n{kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert not bad, bad


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    print(json.dumps(_child(sys.argv[2])))
