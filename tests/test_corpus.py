"""retrieve_corpus: RETRO training neighbours for a whole corpus, memory-mapped and resumable."""

from __future__ import annotations

import numpy as np
import pytest

import ragstore
from helpers import HashEmbedder, tokenizer_path, wiki_docs
from ragstore.errors import InvalidInputError
from ragstore.retrieval import retro
from ragstore.retrieval.corpus import open_corpus, retrieve_corpus


@pytest.fixture(scope="module")
def cstore(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "s"
    s = ragstore.open(path, embedder=HashEmbedder(), sync=False)
    s.add_many({"id": d["id"], "text": d["text"]} for d in wiki_docs(80))
    yield s
    s.close()


@pytest.fixture(scope="module")
def training():
    """Training documents: 12 stored ones (their own copy must never be retrieved) and 6 new ones."""
    docs = wiki_docs(86)
    return [{"id": d["id"], "text": d["text"][:3000]} for d in docs[:12] + docs[80:]]


def test_rows_are_retrieve_document_arrays(cstore, training, tmp_path):
    tok = tokenizer_path()
    res = retrieve_corpus(cstore, training, tmp_path / "out", tokenizer=tok, k=2, batch_chunks=50)
    assert res.doc_ids == [d["id"] for d in training]
    assert res.tokens.shape == (len(res), 2, 2 * 64) and res.chunk_ids.shape == (len(res), 2)
    for i, d in enumerate(training):
        rows = slice(res.doc_rows[i], res.doc_rows[i + 1])
        want = retro.retrieve_sequence(cstore, d["text"], k=2, tokenizer=tok, exclude_docs=[d["id"]])
        arr = want.to_arrays(tok)
        assert np.array_equal(res.tokens[rows], arr.tokens) and np.array_equal(res.mask[rows], arr.mask)
        assert res.chunk_ids[rows].tolist() == [[h.chunk_id for h in hs] for hs in want.neighbours]
        assert np.allclose(res.scores[rows], [[h.score for h in hs] for hs in want.neighbours], atol=1e-6)
        # RETRO's rule: a training chunk never retrieves its own document
        for hs in want.neighbours:
            assert all(h.doc_id != d["id"] for h in hs)
        got = {cstore.get_chunk(int(c)).doc_id for c in res.chunk_ids[rows].ravel() if c}
        assert d["id"] not in got


def test_resumes_after_a_stop_and_a_torn_write(cstore, training, tmp_path):
    tok = tokenizer_path()
    full = retrieve_corpus(cstore, training, tmp_path / "full", tokenizer=tok, batch_chunks=40)
    out = tmp_path / "part"

    class Stop(Exception):
        pass

    def stop_after_two(p):
        if p.documents >= 2:
            raise Stop

    with pytest.raises(Stop):
        retrieve_corpus(cstore, training, out, tokenizer=tok, batch_chunks=40, on_progress=stop_after_two)
    part = open_corpus(out)
    assert 2 <= len(part.doc_ids) < len(training) and len(part) == part.doc_rows[-1]
    # a stop in the middle of the next batch: rows written, their documents not yet listed
    with open(out / "tokens.i32", "ab") as f:
        f.write(b"\x01" * 1000)
    with open(out / "docs.jsonl", "a") as f:
        f.write('{"id": "torn')
    seen = []
    res = retrieve_corpus(cstore, training, out, tokenizer=tok, batch_chunks=40, on_progress=seen.append)
    assert seen[0].skipped == len(part.doc_ids)
    assert res.doc_ids == full.doc_ids and np.array_equal(res.doc_rows, full.doc_rows)
    for name in ("tokens", "mask", "chunk_ids", "scores"):
        assert np.array_equal(getattr(res, name), getattr(full, name)), name
    # a finished run reruns as a no-op
    again = retrieve_corpus(cstore, training, out, tokenizer=tok, batch_chunks=40)
    assert np.array_equal(again.tokens, full.tokens)


def test_bad_resumes_are_refused(cstore, training, tmp_path):
    tok = tokenizer_path()
    out = tmp_path / "o"
    retrieve_corpus(cstore, training[:3], out, tokenizer=tok)
    with pytest.raises(InvalidInputError, match="same order"):
        retrieve_corpus(cstore, list(reversed(training)), out, tokenizer=tok)
    with pytest.raises(InvalidInputError, match="other settings"):
        retrieve_corpus(cstore, training, out, tokenizer=tok, k=3)
    with pytest.raises(InvalidInputError, match="give texts"):
        retrieve_corpus(cstore, [3], tmp_path / "p", tokenizer=tok)
    with pytest.raises(InvalidInputError, match="no retrieve_corpus run"):
        open_corpus(tmp_path / "none")
