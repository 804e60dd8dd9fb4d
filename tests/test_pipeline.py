"""MassiveDS-style retrieval: domains, the reordered pipeline, the scaling study.

Real data: Wikipedia, speeches and code as three domains (one index shard
each); WikiText-2 lines as queries. HashEmbedder for speed.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import sys
from itertools import pairwise

import numpy as np
import pytest

import ragstore
from helpers import DATA, HashEmbedder, read_jsonl, tokenizer_path, wiki_docs
from ragstore import pipeline as P
from ragstore.engine.chunking import Chunker
from ragstore.errors import InvalidInputError


def wikitext_queries(n: int) -> list[str]:
    with gzip.open(DATA / "wikitext-2" / "valid.txt.gz", "rt", encoding="utf-8") as f:
        lines = [ln.strip() for ln in f.read(400_000).splitlines()]
    return [ln[:300] for ln in lines if len(ln) > 200 and not ln.startswith("=")][:n]


DUP_OF = 3  # index of the wiki document stored three more times


def near_text(text: str) -> str:
    cut = Chunker(tokenizer_path(), 64).chunk(text).chunks[0].end  # after the first chunk
    return text[:cut] + " indeed" + text[cut:]


@pytest.fixture(scope="module")
def corpus():
    wiki = wiki_docs(150)
    speeches = read_jsonl("speeches/speeches.jsonl.gz", 6, max_chars=6000)
    code = read_jsonl("code/pytorch-examples.jsonl.gz", 20, max_chars=4000)
    base = wiki[DUP_OF]
    dups = [
        dict(base, id=base["id"] + "-copy1"),
        dict(base, id=base["id"] + "-copy2"),
        # a near-duplicate: one word inserted (later chunks shift by one token)
        dict(base, id=base["id"] + "-near", text=near_text(base["text"])),
    ]
    return wiki + dups + speeches + code


@pytest.fixture(scope="module")
def pstore(tmp_path_factory, corpus):
    path = tmp_path_factory.mktemp("pipeline") / "s"
    s = ragstore.open(path, embedder=HashEmbedder(), sync=False)
    s.add_many(ragstore.Doc(d["id"], d["text"], d["source"], {"title": d["title"]}) for d in corpus)
    yield s
    s.close()


def all_chunks(store, sources):
    """(chunk ids, chunk texts) of every stored chunk of ``sources``, via the public API."""
    ids, texts = [], []
    for s in sources:
        for doc_id in store.doc_ids(source=s):
            doc = store.get(doc_id)
            for c in store.chunk(doc.text):
                ids.append(doc.first_chunk_id + c.position)
                texts.append(c.text)
    return np.asarray(ids), texts


# --------------------------------------------------------------------------- domains
def test_domains_summary(pstore, corpus):
    info = P.domains(pstore)
    assert list(info) == sorted(info, key=lambda n: -info[n].chunks)
    assert set(info) == {"wikipedia", "speeches", "code"}
    for name, di in info.items():
        assert di.documents == sum(d["source"] == name for d in corpus)
        assert di.chunks == pstore.sources()[name]
    assert sum(di.share for di in info.values()) == pytest.approx(1.0)


def test_domain_queries_and_merge_equal_brute_force(pstore):
    emb = HashEmbedder()
    union = ["speeches", "code"]
    ids, texts = all_chunks(pstore, union)
    vecs = emb.encode(texts)
    per_source = {s: all_chunks(pstore, [s])[0] for s in union}
    queries = wikitext_queries(8) + ["def train(model, optimizer, epoch):", "the Congress and the people"]
    for q in queries:
        qv = emb.encode([q])[0]
        scores = vecs @ qv
        order = np.lexsort((ids, -scores))[:8]
        merged = pstore.query(q, 8, sources=union, exact=True)
        assert [h.score for h in merged] == pytest.approx(scores[order].tolist(), abs=1e-5)
        # HNSW over the two shards is approximate: most of the exact top 8
        approx_ids = {h.chunk_id for h in pstore.query(q, 8, sources=union)}
        assert len(approx_ids & set(ids[order].tolist())) >= 6
        assert {h.chunk_id for h in merged} == set(ids[order].tolist()) or np.allclose(
            sorted(scores[order]), sorted(h.score for h in merged), atol=1e-5
        )
        assert all(h.source in union for h in merged)
        # each domain searched alone gives only its chunks; merging them gives the union's result
        parts = [pstore.query(q, 8, sources=[s], exact=True) for s in union]
        for s, hits in zip(union, parts, strict=True):
            assert all(h.source == s and h.chunk_id in set(per_source[s].tolist()) for h in hits)
        assert [h.chunk_id for h in P.merge_hits(parts, 8)] == [h.chunk_id for h in merged]


# --------------------------------------------------------------------------- stages
def test_dedup_keeps_best_ranked_copy(pstore, corpus):
    base = corpus[DUP_OF]
    query = pstore.chunk(base["text"])[0].text
    plain = P.Pipeline(fetch_k=50, k=10).run(pstore, query)
    copies = [h for h in plain.hits if h.position == 0 and h.doc_id.startswith(base["id"])]
    assert len(copies) == 4  # original, two copies, near-duplicate: same first chunk
    for mode in ("minhash", "exact"):
        res = P.Pipeline(fetch_k=50, k=10, dedup=mode).run(pstore, query)
        firsts = [h for h in res.hits if h.position == 0 and h.doc_id.startswith(base["id"])]
        assert len(firsts) == 1 and firsts[0].chunk_id == copies[0].chunk_id  # the best ranked
        assert res.dropped["dedup"] >= 3
        texts = [h.text for h in res.hits]
        assert len(set(texts)) == len(texts)
    # a later chunk of the near-duplicate differs by a word at each end: a near copy
    near = pstore.chunk(near_text(base["text"]))[1].text
    assert near != pstore.chunk(base["text"])[1].text
    hits = pstore.query(near, 10)
    same = [h for h in hits if h.doc_id.startswith(base["id"]) and h.position == 1]
    assert len(same) == 4 and same[0].doc_id.endswith("-near") and same[1].text != near
    for mode in ("minhash", "exact"):
        res = P.Pipeline(fetch_k=10, k=10, dedup=mode).apply(near, hits)
        kept = [h for h in res.hits if h.doc_id.startswith(base["id"]) and h.position == 1]
        assert [h.chunk_id for h in kept] == [same[0].chunk_id] and res.dropped["dedup"] >= 3


def test_minhash_estimates_jaccard(pstore):
    texts = [h.text for h in pstore.query(wikitext_queries(1)[0], 40)]
    grams = [P.word_ngrams(t, 5) for t in texts]
    sigs = [P.minhash_signature(g, 256, seed=7) for g in grams]
    errs = []
    for i in range(len(texts)):
        # perturbed copies: drop a growing tail of words
        words = texts[i].split()
        for cut in (0, 3, 10):
            g2 = P.word_ngrams(" ".join(words[: len(words) - cut]), 5)
            exact = len(np.intersect1d(grams[i], g2)) / len(np.union1d(grams[i], g2))
            est = (sigs[i] == P.minhash_signature(g2, 256, seed=7)).mean()
            errs.append(abs(est - exact))
    assert np.mean(errs) < 0.05 and max(errs) < 0.2
    assert (P.minhash_signature(grams[0], 64, seed=1) == P.minhash_signature(grams[0], 64, seed=1)).all()


def test_decontamination(pstore, corpus):
    d = corpus[10]
    chunk = pstore.chunk(d["text"])[0]
    cands = pstore.query(chunk.text, 30)
    assert cands[0].text == chunk.text
    # against the query: its own copy goes (13-gram Jaccard 1.0)
    res = P.Pipeline(fetch_k=30, k=30, decontaminate=True).apply(chunk.text, cands)
    assert chunk.text not in [h.text for h in res.hits] and res.dropped["decontaminate"] >= 1
    # against reference texts (an evaluation set)
    other = wikitext_queries(3)
    res = P.Pipeline(fetch_k=30, k=30, references=other + [chunk.text]).apply("unrelated query", cands)
    assert chunk.text not in [h.text for h in res.hits]
    # a 20-word span quoted in a long reference: Jaccard is small, the span rule catches it
    words = chunk.text.split()
    ref = " ".join(other) + " " + " ".join(words[5:25]) + " " + " ".join(other)
    loose = P.Pipeline(fetch_k=30, k=30, references=[ref]).apply("q", cands)
    assert chunk.text in [h.text for h in loose.hits]
    strict = P.Pipeline(fetch_k=30, k=30, references=[ref], decon_span=13).apply("q", cands)
    assert chunk.text not in [h.text for h in strict.hits]
    span_q = P.Pipeline(fetch_k=30, k=30, decontaminate=True, decon_threshold=None, decon_span=13)
    assert chunk.text not in [h.text for h in span_q.apply(" ".join(words[5:25]), cands).hits]


def test_subsampling_is_per_chunk(pstore):
    n = pstore.stats().chunks
    ids = np.arange(1, 20_001)
    for p in (0.1, 0.3, 0.7):
        assert abs(P.subsample_keep(ids, p, seed=3).mean() - p) < 0.02
    small, big = P.subsample_keep(ids, 0.1, 3), P.subsample_keep(ids, 0.3, 3)
    assert not (small & ~big).any()  # nested: a smaller datastore is a subset
    assert (P.subsample_keep(ids, 0.3, 4) != big).any()
    assert P.subsample_keep(ids, 1.0, 0).all() and not P.subsample_keep(ids, 0.0, 0).any()
    # the same chunk survives or not for every query
    pl = P.Pipeline(fetch_k=60, k=60, subsample=0.4, seed=11)
    fate: dict[int, bool] = {}
    queries = wikitext_queries(12)
    for q, cands in zip(queries, pstore.query_many(queries, 60), strict=True):
        kept = {h.chunk_id for h in pl.apply(q, cands).hits}
        for h in cands:
            assert fate.setdefault(h.chunk_id, h.chunk_id in kept) == (h.chunk_id in kept)
    assert 0.25 < np.mean(list(fate.values())) < 0.55
    # with every chunk fetched, the pipeline's top-k is the top-k of the kept chunks
    q = queries[0]
    full = pstore.query(q, n, exact=True)
    want = [h.chunk_id for h in full if P.subsample_keep([h.chunk_id], 0.4, 11)[0]][:5]
    got = P.Pipeline(fetch_k=n, k=5, subsample=0.4, seed=11, query_kwargs={"exact": True}).run(pstore, q)
    assert [h.chunk_id for h in got.hits] == want


def test_min_length_and_counts(pstore):
    q = wikitext_queries(2)[1]
    pl = P.Pipeline(fetch_k=200, k=20, dedup="exact", decontaminate=True, subsample=0.5, min_chars=200, min_tokens=60)
    res = pl.run(pstore, q)
    assert all(len(h.text.strip()) >= 200 for h in res.hits)
    tok = pstore.chunker.tokenizer
    assert all(len(tok.encode(h.text, add_special_tokens=False).ids) >= 60 for h in res.hits)
    assert [t[0] for t in res.trace] == ["dedup", "decontaminate", "subsample", "min_length", "top_k"]
    assert res.candidates == 200
    assert res.candidates - sum(res.dropped.values()) == len(res.hits) == 20
    for (_, a, b), (_, c, _) in pairwise(res.trace):
        assert b == c and a >= b
    assert res.dropped["min_length"] > 0  # documents' last chunks are short
    assert "candidates" in res.summary()
    with pytest.raises(InvalidInputError):
        P.Pipeline(fetch_k=10, k=20)
    with pytest.raises(InvalidInputError):
        P.Pipeline(dedup="fuzzy")
    with pytest.raises(InvalidInputError):
        P.Pipeline(subsample=2.0)


def test_rerank_callable_and_embedder(pstore):
    q = wikitext_queries(3)[2]
    by_len = lambda query, hits: [len(h.text) for h in hits]  # noqa: E731
    res = P.Pipeline(fetch_k=40, k=5, rerank=by_len).run(pstore, q)
    plain = pstore.query(q, 40)
    assert [h.score for h in res.hits] == sorted((float(len(h.text)) for h in plain), reverse=True)[:5]
    assert all(res.retrieval_scores[h.chunk_id] <= 1.0 for h in res.hits)
    assert res.dropped["rerank"] == 0
    # exact re-embedding with the store's own embedder reproduces the exact ranking
    same = P.Pipeline(fetch_k=40, k=10, rerank=HashEmbedder()).run(pstore, q)
    exact = pstore.query(q, 10, exact=True)
    assert [h.chunk_id for h in same.hits] == [h.chunk_id for h in exact]
    assert [h.score for h in same.hits] == pytest.approx([h.score for h in exact], abs=1e-5)
    # another embedder (CompactDS's second stage) rescores by its own cosine
    other = HashEmbedder(dim=64, name="other")
    res = P.Pipeline(fetch_k=40, k=5, rerank=other, rerank_top=20).run(pstore, q)
    qv = other.encode([q])[0]
    want = sorted(((float(other.encode([h.text])[0] @ qv), h.chunk_id) for h in plain[:20]), key=lambda t: -t[0])[:5]
    assert [h.chunk_id for h in res.hits] == [c for _, c in want]
    assert res.dropped["rerank"] == 20
    with pytest.raises(InvalidInputError):
        P.Pipeline(rerank=lambda q, h: [1.0]).run(pstore, q)


# --------------------------------------------------------------------------- scaling study
def title_queries(corpus, n):
    """Query: a sentence of a wiki article with its title masked; answer: the title."""
    out = []
    for d in corpus:
        if d["source"] != "wikipedia" or len(d["title"]) < 4:
            continue
        sents = [s for s in re.split(r"(?<=\.)\s+", d["text"]) if 60 < len(s) < 400 and d["title"] in s]
        if sents:
            out.append((sents[-1].replace(d["title"], "___"), d["title"]))
        if len(out) == n:
            break
    return out


def test_scaling_study(pstore, corpus, tmp_path):
    qa = title_queries(corpus, 30)
    assert len(qa) >= 20
    qs, ans = [q for q, _ in qa], [a for _, a in qa]
    res = P.scaling_study(pstore, qs, ans, ps=[0.05, 0.2, 1.0], k=5, fetch_k=100, seeds=[0, 1])
    assert res.ps == [0.05, 0.2, 1.0] and len(res.per_seed) == 3 and len(res.per_seed[0]) == 2
    assert res.recall[0] < res.recall[-1]
    assert res.recall[-1] == pytest.approx(P.answer_recall(pstore.query_many(qs, 5), ans, 5))
    assert "recall@5" in res.table()
    assert P.answer_recall([[]], [["x"]]) == 0.0
    png = tmp_path / "scaling.png"
    if "matplotlib" in sys.modules or _has_matplotlib():
        assert P.plot_scaling(res, str(png)) == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        return False


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    res = P.ScalingResult([0.1, 1.0], [0.2, 0.5], [[0.2], [0.5]], [0], 5, 100, 10, 1000)
    with pytest.warns(RuntimeWarning, match="matplotlib is not installed"):
        assert P.plot_scaling(res, str(tmp_path / "x.png")) is None
    assert not (tmp_path / "x.png").exists()


def test_pipeline_replace_and_hits_untouched(pstore):
    pl = P.Pipeline(fetch_k=20, k=3, dedup="minhash")
    pl2 = pl.replace(subsample=0.5, seed=2)
    assert pl2.dedup == "minhash" and pl2.subsample == 0.5 and pl.subsample is None
    q = wikitext_queries(1)[0]
    cands = pstore.query(q, 20)
    before = [dataclasses.asdict(h) for h in cands]
    pl2.apply(q, cands)
    assert [dataclasses.asdict(h) for h in cands] == before
