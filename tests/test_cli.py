"""The ``ragstore`` command line.

Two halves:

- end-to-end: the installed console script (or ``python -m ragstore``) run in
  subprocesses with the real default embedder (MiniLM) on a small slice of
  the shared data (30 Wikipedia articles, 3 short speeches, a folder of text
  files: about 240 chunks, ingested once per module and copied for tests that
  change the store);
- in-process: typer's CliRunner with a fast hash embedder for the finer cases
  (input parsing, argument checks, output formats, error paths).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ragstore
from helpers import HashEmbedder
from ragstore import embed
from ragstore.config import QueryOptions
from ragstore_cli import app as cli_app
from ragstore_cli.app import app, main
from ragstore_cli.readers import InputError, Malformed, Reader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKI = DATA / "wiki" / "wiki-AA.jsonl.gz"
SPEECHES = DATA / "speeches" / "speeches.jsonl.gz"
SPEECH_IDS = ("inaugural-1793-Washington", "inaugural-1945-Roosevelt", "inaugural-1865-Lincoln")
N_WIKI = 30

pytestmark = pytest.mark.skipif(not WIKI.exists(), reason=f"shared data not found at {DATA}")

SUMMARY_RE = re.compile(
    r"^(\d+) documents \((\d+) added, (\d+) replaced, (\d+) unchanged(?:, (\d+) skipped)?\), (\d+) chunks in [\d.]+s",
    re.M,
)


# ---------------------------------------------------------------------------- helpers
def _cli() -> list[str]:
    exe = shutil.which("ragstore")
    return [exe] if exe else [sys.executable, "-m", "ragstore"]


def run(*args: object, input: bytes | str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    if isinstance(input, str):
        input = input.encode()
    return subprocess.run(
        [*_cli(), *map(str, args)], input=input, capture_output=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "100"},
    )


def out(p: subprocess.CompletedProcess) -> str:
    return p.stdout.decode()


def err(p: subprocess.CompletedProcess) -> str:
    return p.stderr.decode()


def summary(text: str) -> dict[str, int]:
    m = SUMMARY_RE.search(text)
    assert m, f"no ingest summary in {text!r}"
    keys = ("documents", "added", "replaced", "unchanged", "skipped", "chunks")
    return dict(zip(keys, (int(g or 0) for g in m.groups()), strict=True))


def stats_json(store: Path) -> dict:
    p = run("stats", store, "--json")
    assert p.returncode == 0, err(p)
    return json.loads(out(p))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def read_jsonl(path: Path, n: int | None = None) -> list[dict]:
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line))
            if n is not None and len(docs) >= n:
                break
    return docs


def chunk_of(store: Path, doc_id: str, position: int) -> ragstore.Hit:
    with ragstore.open(store, create=False, readonly=True) as st:
        doc = st.get(doc_id)
        return st.get_chunk(doc.first_chunk_id + position)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("inputs")
    wiki = read_jsonl(WIKI, N_WIKI)
    speeches = [r for r in read_jsonl(SPEECHES) if r["id"] in SPEECH_IDS]
    assert len(speeches) == len(SPEECH_IDS)
    texts = d / "texts"
    (texts / "sub").mkdir(parents=True)
    (texts / "notes.txt").write_text(
        "Retrieval-enhanced transformers condition a language model on chunks retrieved from a "
        "large datastore. Each retrieved neighbour comes with its continuation, the chunk that "
        "follows it in the original document.\n", encoding="utf-8")
    (texts / "sub" / "readme.md").write_text(
        "# Lighthouses\n\nA lighthouse is a tower with a bright lamp that guides ships at night "
        "along dangerous coasts.\n", encoding="utf-8")
    (texts / "skipped.csv").write_text("not,read\n", encoding="utf-8")
    (texts / ".hidden.txt").write_text("hidden files are skipped", encoding="utf-8")
    return {
        "dir": d,
        "wiki": write_jsonl(d / "wiki.jsonl.gz", wiki),
        "speeches": write_jsonl(d / "speeches.jsonl", speeches),
        "texts": texts,
        "wiki_docs": wiki,
        "speech_docs": speeches,
        "n_docs": len(wiki) + len(speeches) + 2,
    }


@pytest.fixture(scope="module")
def base(inputs, tmp_path_factory) -> dict:
    """One store ingested once for the module; never modified (copy it to change it)."""
    store = tmp_path_factory.mktemp("base") / "store"
    p = run("ingest", store, inputs["wiki"], inputs["speeches"], inputs["texts"])
    assert p.returncode == 0, err(p)
    return {"store": store, "proc": p, "stats": stats_json(store)}


@pytest.fixture
def store(base, tmp_path) -> Path:
    """A private copy of the module's store, free to change."""
    dst = tmp_path / "store"
    shutil.copytree(base["store"], dst)
    return dst


# ============================================================================ end to end
def test_ingest_creates_store_and_reports(base, inputs):
    p = base["proc"]
    s = summary(out(p))
    assert s["documents"] == s["added"] == inputs["n_docs"]
    assert s["replaced"] == s["unchanged"] == 0
    assert "Traceback" not in err(p) and "warning" not in err(p)
    st = base["stats"]
    assert st["documents"] == inputs["n_docs"]
    assert st["chunks"] == s["chunks"] == st["index_vectors"] > inputs["n_docs"]
    assert st["sources"]["wikipedia"] > 0 and st["sources"]["speeches"] > 0
    assert sum(st["sources"].values()) == st["chunks"]


def test_ingest_ids_and_metadata(base, inputs):
    with ragstore.open(base["store"], create=False, readonly=True) as st:
        # text files: id relative to the folder argument, hidden and other files skipped
        assert "notes.txt" in st and "sub/readme.md" in st
        assert ".hidden.txt" not in st and "skipped.csv" not in st
        assert st.get("notes.txt").source is None
        w = inputs["wiki_docs"][0]
        d = st.get(w["id"])
        assert d.text == w["text"] and d.source == "wikipedia" and d.meta == {"title": w["title"]}
        assert st.get(SPEECH_IDS[0]).source == "speeches"


def test_query_own_chunk_is_top_hit_human(base, inputs):
    doc_id = inputs["wiki_docs"][1]["id"]
    c = chunk_of(base["store"], doc_id, 1)
    p = run("query", base["store"], c.text, "-k", 3)
    assert p.returncode == 0, err(p)
    text = out(p)
    first = text.splitlines()[0]
    assert re.match(rf"1\. [01]\.\d{{4}}  {re.escape(doc_id)}  \[wikipedia\]  chunk 1 ", first), first
    assert "→ continuation:" in text
    assert c.continuation.split()[0] in text
    assert re.search(r"^3\. ", text, re.M) and not re.search(r"^4\. ", text, re.M)


def test_query_json(base, inputs):
    doc_id = inputs["wiki_docs"][3]["id"]
    c = chunk_of(base["store"], doc_id, 0)
    p = run("query", base["store"], c.text, "--json", "-k", 4)
    assert p.returncode == 0, err(p)
    res = json.loads(out(p))
    assert res["query"] == c.text and res["k"] == 4 and len(res["hits"]) == 4
    top = res["hits"][0]
    assert set(top) == {"chunk_id", "doc_id", "source", "position", "score", "text", "continuation",
                        "start", "end", "meta"}
    assert (top["chunk_id"], top["doc_id"], top["text"], top["continuation"]) == (
        c.chunk_id, doc_id, c.text, c.continuation)
    assert top["score"] == pytest.approx(1.0, abs=1e-3)
    scores = [h["score"] for h in res["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_query_filters_and_exact(base, inputs):
    c = chunk_of(base["store"], SPEECH_IDS[2], 0)
    p = run("query", base["store"], c.text, "--json", "-k", 5, "--source", "speeches", "--exact")
    hits = json.loads(out(p))["hits"]
    assert hits[0]["doc_id"] == SPEECH_IDS[2] and {h["source"] for h in hits} == {"speeches"}
    p = run("query", base["store"], c.text, "--json", "-k", 5, "--exclude-doc", SPEECH_IDS[2], "--no-rerank")
    hits = json.loads(out(p))["hits"]
    assert len(hits) == 5 and SPEECH_IDS[2] not in {h["doc_id"] for h in hits}


def test_query_file_batch(base, inputs, tmp_path):
    chunks = [chunk_of(base["store"], inputs["wiki_docs"][i]["id"], 0) for i in (4, 5)]
    qfile = tmp_path / "queries.txt"
    qfile.write_text("\n".join(" ".join(c.text.split()) for c in chunks) + "\n\n", encoding="utf-8")
    p = run("query", base["store"], "--file", qfile, "--json", "-k", 2)
    assert p.returncode == 0, err(p)
    res = json.loads(out(p))
    assert res["k"] == 2 and len(res["results"]) == 2
    for r, c in zip(res["results"], chunks, strict=True):
        assert r["hits"][0]["doc_id"] == c.doc_id and len(r["hits"]) == 2
    p = run("query", base["store"], "--file", qfile, "-k", 1)  # human, one block per query
    assert out(p).count("query 1: ") == 1 and out(p).count("query 2: ") == 1


def test_reingest_is_unchanged_and_stable(store, base, inputs):
    p = run("ingest", store, inputs["wiki"], inputs["speeches"], inputs["texts"])
    assert p.returncode == 0, err(p)
    s = summary(out(p))
    assert s == {"documents": inputs["n_docs"], "added": 0, "replaced": 0, "unchanged": inputs["n_docs"],
                 "skipped": 0, "chunks": 0}
    after = stats_json(store)
    for key in ("documents", "chunks", "tokens", "sources", "index_vectors", "deleted_not_compacted"):
        assert after[key] == base["stats"][key], key


def test_changed_document_is_replaced(store, base, inputs, tmp_path):
    docs = [dict(d) for d in inputs["wiki_docs"][:3]]
    docs[1]["text"] = "Zebras graze on the savanna of Kenya in large herds. " + docs[1]["text"]
    f = write_jsonl(tmp_path / "changed.jsonl", docs)
    p = run("ingest", store, f)
    assert p.returncode == 0, err(p)
    s = summary(out(p))
    assert (s["added"], s["replaced"], s["unchanged"]) == (0, 1, 2)
    st = stats_json(store)
    assert st["documents"] == base["stats"]["documents"]
    assert st["index_vectors"] == st["chunks"]
    res = json.loads(out(run("query", store, "zebras grazing on the savanna of Kenya", "--json", "-k", 1)))
    assert res["hits"][0]["doc_id"] == docs[1]["id"] and res["hits"][0]["text"].startswith("Zebras")
    with ragstore.open(store, create=False, readonly=True) as rs:
        assert rs.get(docs[1]["id"]).text == docs[1]["text"]
    assert run("check", store).returncode == 0


def test_delete_then_query_never_returns_it(store, base, inputs):
    doc_id = inputs["wiki_docs"][2]["id"]
    c = chunk_of(store, doc_id, 0)
    p = run("delete", store, doc_id)
    assert p.returncode == 0, err(p)
    assert re.match(r"deleted 1 document \(\d+ chunks\)", out(p))
    for extra in ([], ["--exact"]):
        hits = json.loads(out(run("query", store, c.text, "--json", "-k", 10, *extra)))["hits"]
        assert hits and doc_id not in {h["doc_id"] for h in hits}
    st = stats_json(store)
    assert st["documents"] == base["stats"]["documents"] - 1
    assert st["deleted_not_compacted"] > 0
    # deleting it again is a user error; --missing-ok makes it a no-op
    p = run("delete", store, doc_id)
    assert p.returncode == 1 and err(p).startswith("error: ") and "Traceback" not in err(p)
    p = run("delete", store, doc_id, "--missing-ok")
    assert p.returncode == 0 and "deleted 0 documents (0 chunks)" in out(p)
    # compact removes the tombstones; the store stays consistent
    p = run("compact", store, "--json")
    assert p.returncode == 0, err(p)
    res = json.loads(out(p))
    assert set(res) == {"bytes_before", "bytes_after", "tombstones_removed", "lmdb_compacted"}
    assert res["tombstones_removed"] > 0
    assert stats_json(store)["deleted_not_compacted"] == 0
    chk = json.loads(out(run("check", store, "--json")))
    assert chk["ok"] and chk["documents"] == st["documents"]


def test_stats_info_check_shapes(base):
    st = base["stats"]
    assert set(st) == {"documents", "chunks", "tokens", "sources", "bytes_on_disk", "lmdb_bytes",
                       "index_bytes", "index_vectors", "deleted_not_compacted", "unindexed"}
    assert st["bytes_on_disk"] == st["lmdb_bytes"] + st["index_bytes"] > 0 and st["unindexed"] == 0
    p = run("info", base["store"], "--json")
    assert p.returncode == 0, err(p)
    info = json.loads(out(p))
    assert info["path"] == str(base["store"])
    assert info["embedder"] == "minilm-int8" and info["dim"] == 384 and info["chunk_tokens"] == 64
    assert info["metric"] == "cos" and len(info["tokenizer_hash"]) == 16
    for key in ("index_dtype", "vector_dtype", "embedder_fingerprint", "schema_version", "created_at"):
        assert key in info
    p = run("check", base["store"], "--json")
    chk = json.loads(out(p))
    assert p.returncode == 0 and chk == {"ok": True, "problems": [], "fixed": False,
                                         "documents": st["documents"], "chunks": st["chunks"]}
    # human forms
    assert re.search(rf"^documents\s+{st['documents']}$", out(run("stats", base["store"])), re.M)
    assert re.search(r"^embedder\s+minilm-int8$", out(run("info", base["store"])), re.M)
    assert out(run("check", base["store"])).strip() == f"ok: {st['documents']} documents, {st['chunks']} chunks"


def test_malformed_lines_reported_skip_and_stop(tmp_path):
    f = tmp_path / "mixed.jsonl"
    with open(f, "wb") as fh:
        fh.write(b'{"id": "good-1", "text": "The first good document is about rivers."}\n')  # 1
        fh.write(b'{"id": "broken", "text": \n')  # 2: bad JSON
        fh.write(b'{"id": "no-text"}\n')  # 3: missing text
        fh.write(b'{"id": "blank", "text": "   \\n "}\n')  # 4: empty text
        fh.write(b'{"id": "latin1", "text": "caf\xe9"}\n')  # 5: invalid UTF-8
        fh.write(b'{"id": "' + b"x" * 600 + b'", "text": "an id the store refuses"}\n')  # 6: library error
        fh.write(b'{"id": "good-2", "text": "The second good document is about mountains."}\n')  # 7
    store = tmp_path / "s"
    p = run("ingest", store, f)  # --on-error skip is the default
    assert p.returncode == 0, err(p)
    e = err(p)
    for line in (2, 3, 4, 5, 6):
        assert re.search(rf"^{re.escape(str(f))}:{line}: ", e, re.M), (line, e)
    assert "bad JSON" in e and "missing 'text'" in e and "UTF-8" in e and "480" in e
    assert "5 malformed inputs skipped" in e and "Traceback" not in e
    assert summary(out(p))["added"] == 2
    assert stats_json(store)["documents"] == 2

    store2 = tmp_path / "s2"
    p = run("ingest", store2, f, "--on-error", "stop")
    assert p.returncode == 1
    assert f"{f}:2: bad JSON" in err(p) and f"{f}:3:" not in err(p)
    assert "error: stopped" in err(p)
    assert stats_json(store2)["documents"] == 1  # what came before is committed

    # a document the library refuses, with --on-error stop: the ones before it are kept
    g = tmp_path / "late.jsonl"
    g.write_bytes(b'{"id": "a", "text": "alpha"}\n{"id": "b", "text": "beta"}\n{"id": "' + b"y" * 500
                  + b'", "text": "gamma"}\n{"id": "d", "text": "delta"}\n')
    p = run("ingest", store2, g, "--on-error", "stop")
    assert p.returncode == 1 and f"{g}:3: document id is 500 bytes" in err(p)
    assert stats_json(store2)["documents"] == 3  # good-1, a, b


def test_user_errors_exit_1_without_traceback(base, tmp_path):
    missing = tmp_path / "nope"
    for args in (("stats", missing), ("query", missing, "hello"), ("info", missing), ("check", missing),
                 ("compact", missing), ("delete", missing, "x")):
        p = run(*args)
        assert p.returncode == 1, (args, err(p))
        assert err(p).startswith("error: ") and "Traceback" not in err(p), err(p)
        assert "no ragstore store" in err(p)
    assert not missing.exists()  # reading commands never create a store
    p = run("ingest", missing, tmp_path / "no-such-file.txt")
    assert p.returncode == 1 and "no such file or directory" in err(p) and not missing.exists()
    p = run("ingest", base["store"], tmp_path / "x.jsonl", "--chunk-tokens", 32)
    assert p.returncode == 1  # missing input is caught before the store is opened
    (tmp_path / "x.jsonl").write_text('{"id": "x", "text": "some text"}\n')
    p = run("ingest", base["store"], tmp_path / "x.jsonl", "--chunk-tokens", 32)
    assert p.returncode == 1 and "chunk_tokens=64" in err(p) and "Traceback" not in err(p)
    assert stats_json(base["store"]) == base["stats"]


def test_usage_errors_exit_2(base):
    for args in (("query", base["store"]), ("query",), ("ingest", base["store"]),
                 ("stats", base["store"], "--bogus"), ("ingest", base["store"], "x.txt", "--on-error", "maybe"),
                 ("query", base["store"], "x", "-k", "0"), ("frobnicate",)):
        p = run(*args)
        assert p.returncode == 2, (args, err(p))
        assert "Usage:" in err(p) and "Traceback" not in err(p)


def test_stdin_jsonl_and_plain_text(tmp_path):
    store = tmp_path / "s"
    lines = "\n" + "\n".join(json.dumps({"id": f"in-{i}", "text": f"Standard input document number {i}.",
                                         "source": "pipe"}) for i in range(3)) + "\n"
    p = run("ingest", store, "-", input=lines)
    assert p.returncode == 0, err(p)
    assert summary(out(p))["added"] == 3
    p = run("ingest", store, "-", "--source", "typed", input="Just some plain text\npiped into ragstore.\n")
    assert p.returncode == 0, err(p)
    with ragstore.open(store, create=False, readonly=True) as st:
        assert st.get("stdin").text == "Just some plain text\npiped into ragstore.\n"
        assert st.get("stdin").source == "typed" and st.get("in-1").source == "pipe"
    p = run("ingest", store, "-", input="{not json\n")
    assert p.returncode == 0 and "<stdin>:1: bad JSON" in err(p)


def test_ctrl_c_exits_130_and_rerun_resumes(tmp_path):
    store = tmp_path / "s"
    docs = [json.dumps({"id": f"d{i}", "text": f"Short document {i} about the number {i}."}) for i in range(6)]
    proc = subprocess.Popen(
        [*_cli(), "ingest", str(store), "-", "--batch", "1"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        proc.stdin.write(("\n".join(docs[:4]) + "\n").encode())
        proc.stdin.flush()  # stdin stays open: the ingest waits for more
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "nothing committed in time"
            if (store / "data.mdb").exists():
                try:
                    with ragstore.open(store, create=False, readonly=True) as st:
                        if len(st) >= 3:
                            break
                except ragstore.RagstoreError:
                    pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    e = stderr.decode()
    assert proc.returncode == 130, e
    m = re.search(r"interrupted: at least (\d+) documents \((\d+) chunks\) were committed", e)
    assert m and "run the same command again" in e and "Traceback" not in e, e
    committed = stats_json(store)["documents"]
    assert committed >= int(m.group(1)) >= 3
    p = run("ingest", store, "-", "--batch", "1", input="\n".join(docs) + "\n")
    assert p.returncode == 0, err(p)
    s = summary(out(p))
    assert s["unchanged"] == committed and s["added"] == 6 - committed
    assert stats_json(store)["documents"] == 6


def test_version_and_python_m():
    p = run("--version")
    assert p.returncode == 0 and out(p).strip() == f"ragstore {ragstore.__version__}"
    p = subprocess.run([sys.executable, "-m", "ragstore", "--help"], capture_output=True)
    assert p.returncode == 0 and b"Usage: ragstore" in p.stdout and b"ingest" in p.stdout


# ============================================================================ in-process (CliRunner)
@pytest.fixture(scope="module")
def hash_embedder():
    """Register the test hash embedder under its name so stores made with it reopen."""
    embed.register("test-hash", lambda arg: HashEmbedder())
    yield "test-hash"
    embed.unregister("test-hash")  # other modules test the unknown-embedder path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: object, input: str | bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, prog_name="ragstore")


@pytest.fixture
def hstore(tmp_path, runner, hash_embedder) -> Path:
    """A small store made with the hash embedder."""
    f = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": "owls", "text": "Owls hunt small mammals at night with silent flight. " * 12, "source": "birds"},
        {"id": "gulls", "text": "Gulls eat fish and scraps along the shore.", "source": "birds"},
        {"id": "oaks", "text": "Oak trees grow acorns and live for centuries.", "title": "Oak"},
    ])
    store = tmp_path / "h"
    r = invoke(runner, "ingest", store, f, "--embedder", hash_embedder, "--chunk-tokens", 16)
    assert r.exit_code == 0, r.output
    return store


def test_runner_query_human_format(runner, hstore):
    r = invoke(runner, "query", hstore, "gulls eat fish", "-k", 2)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("1. ") and "gulls  [birds]  chunk 0 (chars 0-" in lines[0]
    assert lines[1] == "    Gulls eat fish and scraps along the shore."
    assert lines[2] == "  → (end of document)"  # a one-chunk document has no continuation
    owls = invoke(runner, "query", hstore, "owls hunt at night", "-k", 1).stdout
    assert "  → continuation:\n    " in owls


def test_runner_query_no_results_and_bad_args(runner, hstore):
    r = invoke(runner, "query", hstore, "anything", "--source", "no-such-source")
    assert r.exit_code == 0 and r.stdout.strip() == "no results"
    r = invoke(runner, "query", hstore, "anything", "--source", "no-such-source", "--json")
    assert json.loads(r.stdout)["hits"] == []
    r = invoke(runner, "query", hstore, "x", "--file", "q.txt")
    assert r.exit_code == 2 and "not both or neither" in r.stderr
    r = invoke(runner, "query", hstore, "   ")
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "query text" in r.stderr


def test_runner_query_file_from_stdin(runner, hstore):
    r = invoke(runner, "query", hstore, "--file", "-", "--json", "-k", 1, input="owls\n\ngulls fish\n")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"]
    assert [x["query"] for x in res] == ["owls", "gulls fish"]
    assert [x["hits"][0]["doc_id"] for x in res] == ["owls", "gulls"]


def test_runner_title_goes_to_meta(runner, hstore):
    r = invoke(runner, "query", hstore, "oak trees acorns", "--json", "-k", 1)
    assert json.loads(r.stdout)["hits"][0]["meta"] == {"title": "Oak"}


def test_runner_existing_store_keeps_its_embedder(runner, hstore, tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("a new text file about owls", encoding="utf-8")
    r = invoke(runner, "ingest", hstore, f)  # no --embedder: the store's own
    assert r.exit_code == 0, r.output
    assert "1 documents (1 added" in r.stdout
    r = invoke(runner, "ingest", hstore, f, "--embedder", "minilm")
    assert r.exit_code == 1 and r.stderr.startswith("error: ")
    r = invoke(runner, "ingest", tmp_path / "new", f, "--embedder", "no-such-model")
    assert r.exit_code == 1 and "unknown embedder" in r.stderr


def test_runner_delete_check_fix_compact(runner, hstore):
    r = invoke(runner, "delete", hstore, "gulls", "owls")
    assert r.exit_code == 0 and r.stdout.startswith("deleted 2 documents (")
    r = invoke(runner, "delete", hstore, "oaks", "nope")
    assert r.exit_code == 1 and "nope" in r.stderr
    assert invoke(runner, "stats", hstore, "--json").stdout.count('"documents": 1') == 1  # oaks kept
    r = invoke(runner, "check", hstore, "--fix")
    assert r.exit_code == 0 and r.stdout.startswith("ok: 1 documents")
    r = invoke(runner, "compact", hstore)
    assert r.exit_code == 0 and re.match(r"compacted: .* -> .*, \d+ deleted chunks removed", r.stdout)


def test_runner_check_reports_problems(runner, hstore, monkeypatch):
    bad = ragstore.CheckReport(ok=False, problems=["index shard 'birds': 2 chunks have no vector"],
                               fixed=False, documents=3, chunks=9)
    monkeypatch.setattr(ragstore.Store, "check", lambda self, fix=False: bad)
    r = invoke(runner, "check", hstore)
    assert r.exit_code == 1
    assert "problem: index shard 'birds'" in r.stdout and "NOT ok: 1 problem; run with --fix" in r.stdout


def test_runner_interrupt_message(runner, hstore, tmp_path, monkeypatch):
    def add_many(self, docs, *, replace, batch_size, on_progress, on_invalid):
        it = iter(docs)
        next(it)
        on_progress(
            ragstore.IngestProgress(
                documents=1, chunks=2, tokens=9, added=1, replaced=0, unchanged=0, skipped=0, seconds=0.1
            )
        )
        next(it)
        raise KeyboardInterrupt

    monkeypatch.setattr(ragstore.Store, "add_many", add_many)
    f = write_jsonl(tmp_path / "i.jsonl", [{"id": f"i{i}", "text": "t"} for i in range(3)])
    r = invoke(runner, "ingest", hstore, f)
    assert r.exit_code == 130
    assert "interrupted: at least 1 documents (2 chunks) were committed" in r.stderr


def test_runner_non_document_invalid_input_is_not_blamed_on_a_line(runner, hstore, tmp_path, monkeypatch):
    def add_many(self, docs, **kw):
        for _ in docs:
            pass
        raise ragstore.InvalidInputError("embedder output contain NaN or infinity")

    monkeypatch.setattr(ragstore.Store, "add_many", add_many)
    monkeypatch.setattr(ragstore.Store, "__contains__", lambda self, d: False)
    f = write_jsonl(tmp_path / "n.jsonl", [{"id": f"n{i}", "text": "t"} for i in range(3)])
    r = invoke(runner, "ingest", hstore, f)
    assert r.exit_code == 1 and r.stderr == "error: embedder output contain NaN or infinity\n"


def test_runner_ingest_unsupported_and_duplicate(runner, hstore, tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    r = invoke(runner, "ingest", hstore, tmp_path / "data.csv")
    assert r.exit_code == 1 and "unsupported file type" in r.stderr
    f = write_jsonl(tmp_path / "dup.jsonl", [{"id": "z", "text": "one"}, {"id": "z", "text": "two"}])
    r = invoke(runner, "ingest", hstore, f)
    assert r.exit_code == 0
    assert f"{f}:2: duplicate id 'z' (first seen at {f}:1); skipped" in r.stderr


def test_runner_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"ragstore {ragstore.__version__}\n"


def test_internal_error_exit_3_with_log(monkeypatch, capsys, tmp_path):
    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(ragstore, "open", boom)
    monkeypatch.setattr(cli_app.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["stats", str(tmp_path / "s")])
    assert exc.value.code == 3
    e = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in e and "Traceback" not in e
    log = Path(re.search(r"written to (\S+)", e).group(1))
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "kaboom" in log.read_text()


def test_main_user_error_and_usage_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["stats", str(tmp_path / "missing")])
    assert exc.value.code == 1 and capsys.readouterr().err.startswith("error: no ragstore store")
    with pytest.raises(SystemExit) as exc:
        main(["stats"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------- readers
def _read(paths, **kw):
    """The reader alone: what it parses and the malformed input it sees itself."""
    bad = []
    docs = list(Reader([str(p) for p in paths], on_malformed=bad.append, **kw))
    return docs, [str(b) for b in bad]


@pytest.fixture
def checked(tmp_path, hash_embedder):
    """The reader with the store's own checks, as `ragstore ingest` wires them:
    (paths, **reader options) -> (documents the store took, every message in order)."""

    def run_checked(paths, **kw):
        bad: list[Malformed] = []
        reader = Reader([str(p) for p in paths], on_malformed=bad.append, **kw)
        yielded, refused = [], set()

        def docs():
            for d in reader:
                yielded.append(d)
                yield d

        def on_invalid(i, doc_id, e):
            refused.add(i)
            reader.rejected(i, doc_id, e)

        with ragstore.open(tmp_path / "checked", embedder=hash_embedder) as st:
            st.add_many(docs(), replace=True, on_invalid=on_invalid)
        assert reader.malformed == len(bad)
        return [d for i, d in enumerate(yielded) if i not in refused], [str(b) for b in bad]

    return run_checked


def test_reader_text_files_and_folders(tmp_path, checked):
    (tmp_path / "d" / "x" / ".git").mkdir(parents=True)
    (tmp_path / "d" / "b.md").write_text("bee")
    (tmp_path / "d" / "x" / "a.txt").write_bytes("\ufeffay".encode("utf-8"))
    (tmp_path / "d" / "x" / ".git" / "c.txt").write_text("hidden")
    (tmp_path / "d" / "x" / "e.txt").write_text("  \n")
    (tmp_path / "d" / "x" / "f.txt").write_bytes(b"line one\nline \xff two")
    write_jsonl(tmp_path / "d" / "x" / "j.jsonl.gz", [{"id": "j1", "text": "jay"}])
    docs, bad = checked([tmp_path / "d", tmp_path / "d" / "b.md"], default_source="src")
    assert [(d.id, d.text, d.source) for d in docs] == [
        ("b.md", "bee", "src"), ("x/a.txt", "ay", "src"), ("j1", "jay", "src")]
    assert bad == [
        f"{tmp_path / 'd' / 'x' / 'e.txt'}: text of document 'x/e.txt' is empty or only whitespace: "
        "there is nothing to chunk",
        f"{tmp_path / 'd' / 'x' / 'f.txt'}:2: not valid UTF-8 (byte 14)",
        f"{tmp_path / 'd' / 'b.md'}: duplicate id 'b.md' (first seen at {tmp_path / 'd' / 'b.md'}); skipped",
    ]
    # the empty text is the store's to refuse: the reader alone passes it on
    docs, bad = _read([tmp_path / "d"])
    assert [d.id for d in docs] == ["b.md", "x/a.txt", "x/e.txt", "j1"] and len(bad) == 1


def test_reader_jsonl_fields(tmp_path, checked):
    f = tmp_path / "f.jsonl"
    f.write_text("\n".join([
        json.dumps({"id": 7, "text": "int id", "source": "s", "meta": {"k": 1}, "title": "T"}),
        json.dumps({"id": True, "text": "bool id"}),
        json.dumps({"id": "m", "text": "x", "meta": [1]}),
        json.dumps({"id": "t", "text": "x", "title": 3}),
        json.dumps({"id": "s", "text": "x", "source": ""}),
        json.dumps(["not", "an", "object"]),
        '{"id": "sur", "text": "lone \\ud800 surrogate"}',
        json.dumps({"id": "ok", "text": "fine", "source": None}),
    ]) + "\n")
    docs, bad = checked([f], default_source="dflt")
    assert [(d.id, d.source, d.meta) for d in docs] == [
        ("7", "s", {"k": 1, "title": "T"}), ("ok", "dflt", None)]
    assert [b.split(": ", 1)[0] for b in bad] == [f"{f}:{i}" for i in (2, 3, 4, 5, 6, 7)]
    assert "unpaired surrogate" in bad[-1]
    # a refused id reaches the callback as None: the line is found by the document's index
    assert bad[0] == f"{f}:2: document id must be a non-empty str, got True"
    assert bad[3].startswith(f"{f}:5: source must be None or a non-empty str")


def test_reader_refused_document_is_not_a_first_occurrence(tmp_path, checked):
    f = write_jsonl(tmp_path / "z.jsonl", [{"id": "z", "text": " "}, {"id": "z", "text": "zed"}])
    docs, bad = checked([f])
    assert [(d.id, d.text) for d in docs] == [("z", "zed")]
    assert len(bad) == 1 and bad[0].startswith(f"{f}:1: text of document 'z' is empty")


def test_ingest_source_with_lone_surrogate_is_refused(runner, hash_embedder, tmp_path):
    f = tmp_path / "sur.jsonl"
    f.write_text('{"id": "s", "text": "some text", "source": "bad \\ud800 source"}\n')
    r = invoke(runner, "ingest", tmp_path / "sur", f, "--embedder", hash_embedder)
    assert r.exit_code == 0 and r.stderr.startswith(f"{f}:1: ")


def test_reader_corrupt_gzip(tmp_path):
    good = write_jsonl(tmp_path / "g.jsonl.gz", [{"id": f"g{i}", "text": "x" * 2000} for i in range(50)])
    data = good.read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    docs, bad = _read([tmp_path / "cut.jsonl.gz"])
    assert len(bad) == 1 and "rest of file skipped" in bad[0] and bad[0].startswith(f"{tmp_path / 'cut.jsonl.gz'}:")
    assert 0 < len(docs) < 50


def test_reader_stdin_sniffing(checked):
    import io

    docs, bad = _read(["-"], stdin=io.BytesIO(b"\n\n{\"id\": \"a\", \"text\": \"A\"}\n\nnot json\n"))
    assert [d.id for d in docs] == ["a"] and bad == ["<stdin>:5: bad JSON: Expecting value (column 1)"]
    docs, bad = _read(["-"], stdin=io.BytesIO(b"\nplain {text}\n"))
    assert [(d.id, d.text) for d in docs] == [("stdin", "\nplain {text}\n")]
    docs, bad = checked(["-"], stdin=io.BytesIO(b" \n"))
    assert docs == [] and bad == [
        "<stdin>: text of document 'stdin' is empty or only whitespace: there is nothing to chunk"]


def test_reader_path_errors(tmp_path):
    for paths, msg in (([], "no input paths"), (["-", "-"], "only once"),
                       ([str(tmp_path / "missing")], "no such file or directory"),
                       ([str(tmp_path)], None)):
        if msg is None:
            assert Reader(paths, on_malformed=print).files == []
            continue
        with pytest.raises(InputError, match=msg):
            Reader(paths, on_malformed=print)


def test_runner_ingest_limit_reads_a_slice(runner, hash_embedder, tmp_path):
    f = write_jsonl(tmp_path / "l.jsonl", [{"id": f"l{i}", "text": f"document number {i}"} for i in range(10)])
    store = tmp_path / "lim"
    r = invoke(runner, "ingest", store, f, "--limit", "4", "--embedder", hash_embedder)
    assert r.exit_code == 0, r.stderr
    assert summary(r.stdout)["added"] == 4
    r = invoke(runner, "ingest", store, f, "--limit", "6")  # a larger slice adds the rest of it
    assert r.exit_code == 0, r.stderr
    s = summary(r.stdout)
    assert (s["added"], s["unchanged"]) == (2, 4)


def test_runner_query_options_reach_the_library(runner, hstore, monkeypatch):
    seen = []
    real = ragstore.Store.query_many

    def query_many(self, queries, **kw):
        seen.append(kw)
        return real(self, queries, **kw)

    monkeypatch.setattr(ragstore.Store, "query_many", query_many)
    r = invoke(runner, "query", hstore, "owls", "--json")
    assert r.exit_code == 0, r.output
    defaults = {name: getattr(QueryOptions(), name) for name in QueryOptions.names()}
    assert seen[-1] == defaults and json.loads(r.stdout)["k"] == QueryOptions.k
    r = invoke(runner, "query", hstore, "owls", "-k", 2, "-s", "birds", "--exclude-doc", "gulls",
               "--no-rerank", "--exact", "--expansion", 80, "--oversample", 3, "--min-score", 0.25)
    assert r.exit_code == 0, r.output
    assert seen[-1] == dict(k=2, sources=["birds"], exclude_docs=["gulls"], rerank=False, exact=True,
                            expansion=80, oversample=3, mode="dense", fusion="rrf", fusion_depth=None,
                            min_score=0.25)
    r = invoke(runner, "query", hstore, "owls", "--mode", "hybrid", "--fusion-depth", 7)
    assert r.exit_code == 0, r.output
    assert (seen[-1]["mode"], seen[-1]["fusion"], seen[-1]["fusion_depth"]) == ("hybrid", "rrf", 7)
    assert invoke(runner, "query", hstore, "owls", "--rerank").exit_code == 0 and seen[-1]["rerank"] is True
