"""The lexical (BM25) index: analyzer, exact scores, transactional agreement, hybrid queries, old stores."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ragstore
from helpers import HashEmbedder, wiki_docs
from ragstore.engine.analysis import LEXICAL_DEFAULTS, Analyzer
from ragstore.engine.lexical import LexicalIndex, LexicalMissingError, PostingBlock

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
PROCS = str(TESTS / "procs.py")

CORPUS = {
    "owls": "Owls hunt at night. An owl sees well in the dark and hunts mice.",
    "gulls": "Gulls are seabirds; gulls eat fish and steal chips at the beach.",
    "dogs": "The dog barks at the mailman. Dogs are loyal pets and love running.",
    "cats": "Cats sleep all day. A cat hunts mice at night, like an owl.",
    "fox": "The quick brown fox jumps over the lazy dog.",
    "bees": "Bees make honey; the honey bee dances to tell where flowers are.",
}


def analyzer() -> Analyzer:
    return Analyzer.of(LEXICAL_DEFAULTS)


@pytest.fixture
def lex(tmp_path):
    s = ragstore.open(tmp_path / "lex", embedder=HashEmbedder(), chunk_tokens=64)
    s.add_many([ragstore.Doc(k, v, source="birds" if k in ("owls", "gulls") else "other") for k, v in CORPUS.items()])
    yield s
    s.close()


def lexical_view(s: ragstore.Store) -> dict[str, dict[int, tuple[int, int]]]:
    """term -> {chunk id: (tf, length)} as stored in LMDB."""
    rec = s._records
    out: dict[str, dict[int, tuple[int, int]]] = {}
    with rec.read() as txn:
        for k, v in txn.cursor(db=rec.lex_post):
            ids, tf, ln = PostingBlock.decode(PostingBlock.base_of(k), v)
            d = out.setdefault(PostingBlock.term_of(k), {})
            for i, t, n in zip(ids.tolist(), tf.tolist(), ln.tolist(), strict=True):
                assert i not in d, f"chunk {i} posted twice for {PostingBlock.term_of(k)!r}"
                d[i] = (int(t), int(n))
    return out


def expected_view(s: ragstore.Store) -> dict[str, dict[int, tuple[int, int]]]:
    """The same, recomputed from the live chunk records."""
    a = analyzer()
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for doc_id in s.doc_ids():
        doc = s.get(doc_id)
        for cid in range(doc.first_chunk_id, doc.first_chunk_id + doc.n_chunks):
            cnt, n = a.counts(s.get_chunk(cid).text)
            for term, tf in cnt.items():
                out.setdefault(term, {})[cid] = (tf, n)
    return out


# ---------------------------------------------------------------------- analyzer
def test_analyzer_words_lowercase_stopwords_stems():
    a = analyzer()
    assert a.terms("The Running cats, running! Naïve café_au_lait 42") == [
        "run", "cat", "run", "naïv", "café_au_lait", "42"]
    assert a.terms("to be or not to be, that is the question") == ["question"]  # Lucene's English stop set
    cnt, n = a.counts("Owls and owl hunting")
    assert cnt == {"owl": 2, "hunt": 1} and n == 3
    with pytest.raises(ragstore.InvalidInputError):
        ragstore.engine.analysis.lexical_settings({"stemmer": "klingon"})
    with pytest.raises(ragstore.InvalidInputError):
        ragstore.engine.analysis.lexical_settings({"b": 2})


# ---------------------------------------------------------------------- scores
def test_bm25_scores_match_hand_computation_and_bm25s(lex):
    a = analyzer()
    texts = {h.doc_id: h.text for h in (lex.get_chunk(i) for i in range(1, 7))}
    toks = {d: a.terms(t) for d, t in texts.items()}
    N = len(toks)
    avg = sum(len(t) for t in toks.values()) / N
    k1, b = LEXICAL_DEFAULTS["k1"], LEXICAL_DEFAULTS["b"]

    def hand(q: str, d: str) -> float:
        score = 0.0
        for term in dict.fromkeys(a.terms(q)):
            df = sum(term in t for t in toks.values())
            tf = toks[d].count(term)
            if df and tf:
                idf = math.log(1 + (N - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(toks[d]) / avg))
        return score

    for q in ("owl hunting mice at night", "dog", "honey bees dance", "gulls steal chips"):
        hits = lex.query(q, k=6, mode="lexical")
        assert hits, q
        for h in hits:
            assert h.score == pytest.approx(hand(q, h.doc_id), rel=1e-5)
        want = sorted((d for d in toks if hand(q, d) > 0), key=lambda d: -hand(q, d))
        assert [h.doc_id for h in hits] == want
    bm25s = pytest.importorskip("bm25s")
    order = list(toks)
    ref = bm25s.BM25(k1=k1, b=b, method="lucene")
    ref.index([toks[d] for d in order], show_progress=False)
    for q in ("owl hunting mice at night", "the dog barks"):
        got = {h.doc_id: h.score for h in lex.query(q, k=6, mode="lexical")}
        want = ref.get_scores(a.terms(q))
        for d, w in zip(order, want, strict=True):
            assert got.get(d, 0.0) == pytest.approx(float(w), rel=1e-4, abs=1e-6)


def test_query_with_no_known_terms_and_vector_queries(lex):
    assert lex.query("zebra xylophone", mode="lexical") == []
    assert lex.query("the and of", mode="lexical") == []  # stopwords only
    with pytest.raises(ragstore.InvalidInputError, match="texts"):
        lex.query(np.ones(32, np.float32), mode="lexical")
    with pytest.raises(ragstore.InvalidInputError, match="mode"):
        lex.query("owl", mode="sparse")


# ---------------------------------------------------------------------- agreement
def test_postings_agree_with_chunks_after_add_replace_delete(tmp_path):
    s = ragstore.open(tmp_path / "s", embedder=HashEmbedder(), chunk_tokens=16)
    docs = wiki_docs(30)
    s.add_many([ragstore.Doc(f"d{i}", d["text"][:1500]) for i, d in enumerate(docs[:20])], batch_size=40)
    for i in range(20, 30):  # one transaction a document: postings merge into the terms' last blocks
        s.add(f"d{i}", docs[i]["text"][:800])
    s.add("d3", "owls replace the third document entirely", replace=True)
    s.add_many([ragstore.Doc("d4", "a replaced fourth, owls again"), ragstore.Doc("d5", docs[5]["text"][:300])],
               replace=True)
    s.delete("d7")
    s.delete_many(["d8", "d21"])
    assert lexical_view(s) == expected_view(s)
    assert s.check().ok
    with s._records.read() as txn:
        n, total = LexicalIndex(s._records).stats(txn)
    lengths = [len(analyzer().terms(s.get_chunk(c).text)) for d in s.doc_ids()
               for c in range(s.get(d).first_chunk_id, s.get(d).first_chunk_id + s.get(d).n_chunks)]
    assert (n, total) == (s.stats().chunks, sum(lengths))
    assert sorted(h.doc_id for h in s.query("owls", k=5, mode="lexical")) == ["d3", "d4"]
    s.compact()
    assert lexical_view(s) == expected_view(s) and s.check().ok
    s.close()


def test_same_document_twice_in_one_batch(tmp_path):
    s = ragstore.open(tmp_path / "s", embedder=HashEmbedder(), chunk_tokens=16)
    s.add_many([ragstore.Doc("a", "first owls text"), ragstore.Doc("a", "second gulls text")], replace=True)
    assert lexical_view(s) == expected_view(s)
    assert [h.doc_id for h in s.query("gulls", mode="lexical")] == ["a"]
    assert s.query("owls", mode="lexical") == []
    s.close()


# ---------------------------------------------------------------------- hits
def test_lexical_and_hybrid_hits_have_continuations_sources_and_exclusions(tmp_path):
    s = ragstore.open(tmp_path / "s", embedder=HashEmbedder(), chunk_tokens=16)
    text = " ".join(wiki_docs(3)[1]["text"].split()[:120]) + " zanzibarian"
    s.add("long", text, source="a")
    s.add("other", "zanzibarian zanzibarian spices", source="b")
    for mode in ("lexical", "hybrid"):
        hits = s.query("zanzibarian", k=10, mode=mode)
        assert {h.doc_id for h in hits} >= {"long", "other"}
        for h in hits:
            c = s.get_chunk(h.chunk_id)
            assert (h.text, h.continuation, h.start, h.end) == (c.text, c.continuation, c.start, c.end)
        first = s.query(text.split()[0] + " " + text.split()[1], k=1, mode=mode, sources=["a"])[0]
        if first.position == 0:
            assert first.continuation == s.get_chunk(first.chunk_id + 1).text
        assert all(h.source == "b" for h in s.query("zanzibarian", k=5, mode=mode, sources=["b"]))
        assert all(h.doc_id != "other" for h in s.query("zanzibarian", k=5, mode=mode, exclude_docs=["other"]))
        per_query = s.query_many(["zanzibarian", "zanzibarian"], k=5, mode=mode, exclude_docs=[["other"], ["long"]])
        assert {h.doc_id for h in per_query[0]} == {"long"} and {h.doc_id for h in per_query[1]} == {"other"}
    fused = s.query("zanzibarian spices", k=2, mode="hybrid")
    assert fused[0].doc_id == "other" and fused[0].score == pytest.approx(2 / 61)
    s.close()


# ---------------------------------------------------------------------- old stores
def test_store_without_lexical_index_is_refused_then_built_explicitly(tmp_path):
    path = tmp_path / "store-v1"
    shutil.copytree(FIXTURES / "store-v1", path)
    expected = json.loads((FIXTURES / "store-v1.expected.json").read_text())
    q = np.asarray(expected["queries"][0], dtype=np.float32)
    with ragstore.open(path, readonly=True) as s:
        assert s.config.lexical is None and "lexical" not in s.config.to_dict()
        with pytest.raises(LexicalMissingError, match="index-lexical"):
            s.query("anything", mode="lexical")
        before = [h.chunk_id for h in s.query(q, 5)]
    with pytest.raises(ragstore.ConfigMismatchError, match="index_lexical"):
        ragstore.open(path, lexical=True)
    with ragstore.open(path) as s:
        assert s.check().ok and s.config.lexical is None  # opened writable: still without one
        built = s.index_lexical()
        assert built.chunks == s.stats().chunks and built.postings > 0
        assert s.config.lexical == LEXICAL_DEFAULTS
        word = max(analyzer().terms(s.get_chunk(before[0]).text), key=len)
        assert s.query(word, k=3, mode="lexical")
        assert [h.chunk_id for h in s.query(q, 5)] == before
        assert s.check().ok
    with ragstore.open(path, readonly=True) as s:
        assert s.config.lexical == LEXICAL_DEFAULTS and s.query(word, k=3, mode="lexical")


def test_new_store_without_lexical_index(tmp_path):
    with ragstore.open(tmp_path / "s", embedder=HashEmbedder(), lexical=False) as s:
        s.add("a", "owls at night")
        assert s.config.lexical is None and s._records.lex_post is None
        with pytest.raises(LexicalMissingError):
            s.query("owls", mode="hybrid")
        assert s.check().ok


# ---------------------------------------------------------------------- check and fix
def test_check_reports_and_fix_rebuilds_damaged_postings(lex):
    rec = lex._records
    with rec.read() as txn:
        k = bytes(next(iter(txn.cursor(db=rec.lex_post)))[0])
    rec.write(lambda txn: txn.delete(k, db=rec.lex_post))
    r = lex.check()
    assert not r.ok and any("lexical index" in p for p in r.problems), r.problems
    r = lex.check(fix=True)
    assert r.fixed and lex.check().ok
    assert lexical_view(lex) == expected_view(lex)


# ---------------------------------------------------------------------- other processes
READER = """
import json, sys
sys.path.insert(0, {tests!r})
import ragstore
from helpers import HashEmbedder
s = ragstore.open({path!r}, readonly=True, embedder=HashEmbedder())
print("READY", flush=True)
for line in sys.stdin:
    word = line.strip()
    try:
        hits = s.query(word, k=50, mode="lexical")
    except ragstore.RagstoreError as e:
        print(json.dumps(["ERR", type(e).__name__]), flush=True)
        continue
    # the hits' chunks and their postings are of one commit: each hit's text holds the word
    print(json.dumps(sorted({{h.doc_id for h in hits if word in h.text.lower()}} | {{"TORN" for h in hits
          if word not in h.text.lower()}})), flush=True)
"""


def test_other_process_reader_sees_each_commit_whole(tmp_path):
    path = tmp_path / "s"
    s = ragstore.open(path, embedder=HashEmbedder(), chunk_tokens=16, lexical=False)
    s.add("seed", "a store made without a lexical index")
    p = subprocess.Popen([sys.executable, "-c", READER.format(tests=str(TESTS), path=str(path))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY"

        def ask(word: str):
            p.stdin.write(word + "\n")
            p.stdin.flush()
            return json.loads(p.stdout.readline())

        assert ask("seed") == ["ERR", "LexicalMissingError"]
        s.index_lexical()  # built by this process, seen by the reader opened before
        assert ask("lexical") == ["seed"]
        for i in range(6):
            s.add_many([ragstore.Doc(f"m{i}-{j}", f"marker{i} text number {j}") for j in range(3)])
            assert ask(f"marker{i}") == [f"m{i}-0", f"m{i}-1", f"m{i}-2"]
        s.delete("m2-1")
        assert ask("marker2") == ["m2-0", "m2-2"]
        s.add("m3-0", "marker2 now", replace=True)
        assert ask("marker3") == ["m3-1", "m3-2"] and ask("marker2") == ["m2-0", "m2-2", "m3-0"]
    finally:
        p.stdin.close()
        p.wait(10)
        s.close()


def test_sigkill_during_ingest_leaves_postings_agreeing(tmp_path):
    path = tmp_path / "store"
    for rnd, delay in enumerate((0.3, 0.9)):
        p = subprocess.Popen([sys.executable, PROCS, "writer", str(path), f"k{rnd}", "100000", "--delete-every", "4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        head = [p.stdout.readline() for _ in range(8)]  # writing has begun (imports take a while under load)
        time.sleep(delay)  # then kill it mid-stream, most likely inside a transaction
        p.send_signal(signal.SIGKILL)
        rest, err = p.communicate()
        out = "".join(head) + rest
        assert "Traceback" not in err, err
        acked = [ln.split()[1] for ln in out.splitlines() if ln.startswith("ACK ")]
        with ragstore.open(path, embedder=HashEmbedder()) as s:
            r = s.check()
            assert r.ok, r.problems
            assert lexical_view(s) == expected_view(s)
            live = [d for d in acked if d in s]
            assert live, out[-500:]
            for doc_id in live[-3:]:
                i = doc_id.split("-")[1]
                hits = s.query(f"unique marker k{rnd} {i}", k=10, mode="lexical")
                assert doc_id in [h.doc_id for h in hits]


def test_hybrid_is_the_rrf_of_the_dense_and_lexical_rankings(tmp_path):
    from ragstore.engine.hybrid import rrf_ids

    s = ragstore.open(tmp_path / "s", embedder=HashEmbedder(), chunk_tokens=16)
    s.add_many([ragstore.Doc(f"d{i}", d["text"][:600], source=("a", "b")[i % 2]) for i, d in enumerate(wiki_docs(40))])
    for q in ("the history of the city", "football club league season", "river north mountain"):
        for opts in ({}, {"sources": ["a"]}, {"exclude_docs": ["d1", "d2", "d3"]}):
            dense = s.query(q, k=12, **opts)
            lexical = s.query(q, k=12, mode="lexical", **opts)
            want = rrf_ids([[h.chunk_id for h in dense], [h.chunk_id for h in lexical]], 5)
            got = s.query(q, k=5, mode="hybrid", fusion_depth=12, **opts)
            assert [(h.chunk_id, h.score) for h in got] == [(c, pytest.approx(sc)) for c, sc in want]
            for h in got:
                c = s.get_chunk(h.chunk_id)
                assert (h.text, h.continuation, h.doc_id) == (c.text, c.continuation, c.doc_id)
    s.close()


def test_cli_ingest_no_lexical_makes_a_store_without_one(tmp_path):
    """`ragstore ingest --no-lexical`: no lexical index (dense queries work, lexical ones say how to build it)."""
    code = (
        "import sys; from ragstore import embed; from ragstore.testing import HashEmbedder; "
        "embed.register('test-hash', lambda arg: HashEmbedder()); "
        "from ragstore_cli.app import main; sys.argv = ['ragstore', *sys.argv[1:]]; main()"
    )

    def cli(*args):
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[1])

    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in wiki_docs(5)))
    for flag, has in (("--no-lexical", False), ("--lexical", True)):
        s = tmp_path / flag.strip("-")
        r = cli("ingest", s, f, "--embedder", "test-hash", flag)
        assert r.returncode == 0, r.stderr
        with ragstore.open(s, embedder=HashEmbedder()) as st:
            assert (st.config.lexical is not None) is has and len(st) == 5
        r = cli("query", s, "history of the city", "--mode", "lexical")
        if has:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 1 and "index-lexical" in r.stderr and "Traceback" not in r.stderr
