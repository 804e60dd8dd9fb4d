"""RETRO-style retrieval: per-chunk neighbours, LM arrays, leakage, prefetching.

Real data: a slice of Wikipedia (plus speeches and code as extra domains) in
the store, WikiText-2 valid as the input sequences; HashEmbedder for speed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import ragstore
from helpers import HashEmbedder, gpt2_style_tokenizer, read_jsonl, wiki_docs, wikitext
from ragstore import retro
from ragstore.errors import InvalidInputError


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_style_tokenizer()


@pytest.fixture(scope="module")
def corpus():
    wiki = wiki_docs(150)
    speeches = read_jsonl("speeches/speeches.jsonl.gz", 6, max_chars=6000)
    code = read_jsonl("code/pytorch-examples.jsonl.gz", 20, max_chars=4000)
    return wiki + speeches + code


@pytest.fixture(scope="module")
def rstore(tmp_path_factory, corpus):
    path = tmp_path_factory.mktemp("retro") / "s"
    s = ragstore.open(path, embedder=HashEmbedder(), sync=False)
    s.add_many(ragstore.Doc(d["id"], d["text"], d["source"], {"title": d["title"]}) for d in corpus)
    yield s
    s.close()


def long_doc(store, corpus, min_chunks=8):
    for d in corpus:
        if d["source"] == "wikipedia" and len(store.chunk(d["text"])) >= min_chunks:
            return d
    raise AssertionError("no long document in the slice")


# --------------------------------------------------------------------------- splitting
def test_split_text_matches_store_chunks(rstore, corpus):
    d = long_doc(rstore, corpus)
    chunks = retro.split_sequence(rstore, d["text"])
    want = rstore.chunk(d["text"])
    assert [(c.text, c.start, c.end) for c in chunks] == [(c.text, c.start, c.end) for c in want]
    assert all(d["text"][c.start : c.end] == c.text for c in chunks)
    assert chunks[-1].token_end == sum(c.n_tokens for c in want)


def test_retrieve_sequence_wikitext(rstore):
    text = wikitext(chars=12_000)
    ids = rstore.chunker.tokenizer.encode(text, add_special_tokens=False).ids[:2048]
    seq = rstore.chunker.tokenizer.decode(ids)
    res = retro.retrieve_sequence(rstore, text, k=2)
    n_tok = len(rstore.chunker.tokenizer.encode(text, add_special_tokens=False).ids)
    assert len(res) == -(-n_tok // 64) == len(res.neighbours)
    assert all(len(n) == 2 for n in res.neighbours)
    # one batched query_many: same neighbours as querying the chunk texts directly
    direct = rstore.query_many([c.text for c in res.chunks], 2)
    assert [[h.chunk_id for h in n] for n in res.neighbours] == [[h.chunk_id for h in n] for n in direct]
    for hits in res.neighbours:
        for h in hits:  # [N, F]: F is the next chunk of the same document
            if h.continuation is not None:
                nxt = rstore.get_chunk(h.chunk_id + 1)
                assert nxt.doc_id == h.doc_id and nxt.text == h.continuation
    assert res.pairs(0) == [(h.text, h.continuation) for h in res.neighbours[0]]
    assert seq  # decoded 2048-token input is usable as well
    assert len(retro.retrieve_sequence(rstore, ids, k=2)) == 32


def test_token_id_input_with_lm_tokenizer(rstore, gpt2):
    text = wikitext(chars=6000, skip=20_000)
    ids = gpt2.encode(text).ids
    res = retro.retrieve_sequence(rstore, ids, k=3, tokenizer=gpt2, chunk_tokens=32)
    assert len(res) == -(-len(ids) // 32)
    assert [(c.token_start, c.token_end) for c in res.chunks][:2] == [(0, 32), (32, 64)]
    assert res.chunks[-1].token_end == len(ids)
    whole = gpt2.decode(ids)
    for c in res.chunks:
        assert whole[c.start : c.end] == c.text  # exact spans of the decoded input
    assert all(len(n) == 3 for n in res.neighbours)
    # numpy ids work too
    res2 = retro.retrieve_sequence(rstore, np.asarray(ids, dtype=np.int64), k=3, tokenizer=gpt2, chunk_tokens=32)
    assert [c.text for c in res2.chunks] == [c.text for c in res.chunks]


def test_bad_inputs(rstore):
    with pytest.raises(InvalidInputError):
        retro.retrieve_sequence(rstore, [], k=2)
    with pytest.raises(InvalidInputError):
        retro.retrieve_sequence(rstore, "   ", k=2)
    with pytest.raises(InvalidInputError):
        retro.retrieve_sequence(rstore, "text", k=0)
    with pytest.raises(InvalidInputError):
        retro.retrieve_sequence(rstore, "text", k=2, max_overlap=1.5)
    with pytest.raises(InvalidInputError):
        retro.retrieve_sequence(rstore, "text", k=2, chunk_tokens=0)


# --------------------------------------------------------------------------- exclusion, causality
def test_same_document_exclusion_keeps_k(rstore, corpus):
    d = long_doc(rstore, corpus, min_chunks=10)
    own = retro.retrieve_sequence(rstore, d["text"], k=5)
    # without exclusion every chunk finds itself first
    for u, hits in enumerate(own.neighbours):
        assert hits[0].doc_id == d["id"] and hits[0].position == u
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert sum(h.doc_id == d["id"] for n in own.neighbours for h in n) > len(own)
    ex = retro.retrieve_document(rstore, d["id"], k=5)
    assert len(ex) == len(own)
    for hits in ex.neighbours:
        assert len(hits) == 5  # k kept although the nearest chunks were all excluded
        assert all(h.doc_id != d["id"] for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # same with a long speech: many near-duplicate chunks from one document
    sp = next(x for x in corpus if x["source"] == "speeches")
    exs = retro.retrieve_document(rstore, sp["id"], k=4, sources=["speeches"])
    assert all(len(h) == 4 and all(x.doc_id != sp["id"] and x.source == "speeches" for x in h) for h in exs.neighbours)


def test_shift_is_causal(rstore):
    text = wikitext(chars=3000, skip=40_000)
    plain = retro.retrieve_sequence(rstore, text, k=2)
    shifted = retro.retrieve_sequence(rstore, text, k=2, shift=True)
    assert shifted.shifted and not plain.shifted
    assert len(shifted) == len(plain)
    assert shifted.neighbours[0] == [] and shifted.retrieved_with[0] is None
    for u in range(1, len(plain)):
        assert shifted.neighbours[u] == plain.neighbours[u - 1]
        assert shifted.retrieved_with[u] == u - 1
    arr = shifted.to_arrays()
    assert not arr.mask[0].any() and arr.mask[1].any()


# --------------------------------------------------------------------------- LM-ready arrays
def test_arrays_layout_and_padding(rstore, corpus, gpt2):
    pad = gpt2.token_to_id("<|endoftext|>")
    d = long_doc(rstore, corpus)
    last = rstore.chunk(d["text"])[-1].text
    # query = a document's last chunk + some other text: the first neighbour of
    # the first chunk ends its document, so its continuation must be padding
    res = retro.retrieve_sequence(rstore, last, k=2)
    assert res.neighbours[0][0].doc_id == d["id"] and res.neighbours[0][0].continuation is None
    text = wikitext(chars=4000, skip=60_000)
    res2 = retro.retrieve_sequence(rstore, text, k=2)
    for r in (res, res2):
        a = r.to_arrays(gpt2, chunk_tokens=64)
        n = len(r)
        assert a.tokens.shape == a.mask.shape == (n, 2, 128)
        assert a.tokens.dtype == np.int32 and a.mask.dtype == bool
        assert (a.tokens[~a.mask] == pad).all()
        for u, hits in enumerate(r.neighbours):
            for j, h in enumerate(hits):
                want_n = gpt2.encode(h.text).ids[:64]
                assert a.neighbours[u, j][a.mask[u, j, :64]].tolist() == want_n
                assert a.mask[u, j, : len(want_n)].all() and not a.mask[u, j, len(want_n) : 64].any()
                if h.continuation is None:
                    assert not a.mask[u, j, 64:].any()  # never the next document
                else:
                    want_f = gpt2.encode(h.continuation).ids[:64]
                    assert a.continuations[u, j][a.mask[u, j, 64:]].tolist() == want_f
    assert res.to_arrays(gpt2).tokens.shape[-1] == 2 * 64  # default: the splitting chunk size
    # the store's own tokenizer has [PAD]; a missing neighbour is all padding
    none = retro.retrieve_sequence(rstore, text, k=2, sources=["no-such-domain"])
    a = none.to_arrays()
    assert not a.mask.any() and (a.tokens == 0).all()


def test_arrays_need_a_pad_id(rstore):
    bare = Tokenizer(models.BPE())
    bare.pre_tokenizer = pre_tokenizers.ByteLevel()
    bare.add_tokens(["a", "b"])
    res = retro.retrieve_sequence(rstore, "the history of the city", k=1)
    with pytest.raises(InvalidInputError, match="pad"):
        res.to_arrays(bare)
    assert res.to_arrays(bare, pad_id=-1).tokens.shape == (1, 1, 128)


# --------------------------------------------------------------------------- leakage
def naive_lcr(a, b):
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            n = 0
            while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
                n += 1
            best = max(best, n)
    return best


def test_longest_common_run_matches_naive():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 4, size=rng.integers(0, 20)).tolist()
        b = rng.integers(0, 4, size=rng.integers(0, 30)).tolist()
        assert retro.longest_common_run(a, b) == naive_lcr(a, b)
    assert retro.leakage([1, 2, 3, 4], [9, 2, 3, 4, 9]) == 0.75
    assert retro.leakage([], [1]) == 0.0


def test_max_overlap_filter_keeps_k(rstore, corpus):
    d = long_doc(rstore, corpus)
    base = retro.retrieve_sequence(rstore, d["text"], k=3, with_overlap=True)
    assert all(ov[0] == 1.0 for ov in base.overlaps)  # the chunk itself is an exact copy
    res = retro.retrieve_sequence(rstore, d["text"], k=3, max_overlap=0.25)
    tok = res.tokenizer
    for c, hits, ovs in zip(res.chunks, res.neighbours, res.overlaps, strict=True):
        assert len(hits) == 3
        for h, o in zip(hits, ovs, strict=True):
            text = h.text + (" " + h.continuation if h.continuation else "")
            assert o == pytest.approx(retro.leakage(tok.encode(c.text), tok.encode(text)))
            assert o <= 0.25
    # the copies are gone but further neighbours of the same document may stay
    assert all(not (h.doc_id == d["id"] and h.position == u) for u, hs in enumerate(res.neighbours) for h in hs)


def test_leakage_report_distribution(rstore, corpus):
    stored = [d["text"] for d in corpus[:4]]
    fresh = [wikitext(chars=3000, skip=s) for s in (0, 50_000, 100_000)]
    leaky = retro.leakage_report(rstore, stored, k=2)
    clean = retro.leakage_report(rstore, fresh, k=2)
    assert leaky.quantiles[0.5] == 1.0 and leaky.fraction_above(0.9) == 1.0
    assert clean.quantiles[0.5] < 0.25 and clean.fraction_above(0.5) == 0.0
    for rep in (leaky, clean):
        assert sum(rep.histogram) == rep.n_chunks > 0
        assert rep.n_pairs == 2 * rep.n_chunks
        assert len(rep.bin_edges) == 11
        assert "histogram" in rep.summary()
    # precomputed results are accepted, and the shift is respected
    pre = [retro.retrieve_sequence(rstore, t, k=2, shift=True) for t in fresh]
    rep = retro.leakage_report(rstore, pre)
    assert rep.n_chunks == clean.n_chunks - len(fresh)


# --------------------------------------------------------------------------- prefetching
class SlowStore:
    """A store whose searches take ``delay`` seconds (a big remote index)."""

    def __init__(self, store, delay):
        self.store = store
        self.delay = delay
        self.chunker = store.chunker

    def query_many(self, texts, k, **kw):
        time.sleep(self.delay)
        return self.store.query_many(texts, k, **kw)


def generate(pf, chunks, lm_step):
    """A fake RETRO decoder: chunk u is generated with the neighbours of chunk u-1."""
    served = []
    t0 = time.perf_counter()
    for u, chunk in enumerate(chunks):
        if u > 0:
            served.append(pf.get(u - 1))
        time.sleep(lm_step)  # the LM generates chunk u
        pf.submit(chunk)
    return time.perf_counter() - t0, served


def test_prefetcher_exact_matches_store(rstore):
    chunks = [c.text for c in retro.split_sequence(rstore, wikitext(chars=3000, skip=7000))]
    with retro.Prefetcher(rstore, k=3) as pf:
        us = [pf.submit(c) for c in chunks]
        got = [pf.get(u) for u in us]
    want = rstore.query_many(chunks, 3)
    assert [[h.chunk_id for h in g.hits] for g in got] == [[h.chunk_id for h in w] for w in want]
    assert all(g.served == g.chunk and not g.stale for g in got)
    assert pf.stats["submitted"] == pf.stats["served"] == len(chunks)
    with pytest.raises(InvalidInputError):
        pf.submit("after close")


def test_prefetcher_token_ids_and_errors(rstore, gpt2):
    ids = gpt2.encode("The history of the city of Paris").ids
    with retro.Prefetcher(rstore, k=2, tokenizer=gpt2) as pf:
        u = pf.submit(ids)
        assert len(pf.get(u).hits) == 2
        with pytest.raises(InvalidInputError):
            pf.get(5)
    with pytest.raises(InvalidInputError):
        retro.Prefetcher(rstore, k=2, mode="eager")


def test_prefetcher_stale_mode_hides_latency(rstore):
    chunks = [c.text for c in retro.split_sequence(rstore, wikitext(chars=3000, skip=9000))][:6]
    assert len(chunks) == 6
    slow = SlowStore(rstore, delay=0.12)
    with retro.Prefetcher(slow, k=2, mode="exact") as pf:
        t_exact, served_exact = generate(pf, chunks, lm_step=0.12)
    with retro.Prefetcher(slow, k=2, mode="stale") as pf:
        t_stale, served_stale = generate(pf, chunks, lm_step=0.12)
        stats = dict(pf.stats)
    # exact: every get waits for the whole search; stale: searches overlap generation
    assert t_exact > 6 * 0.12 + 4 * 0.12
    assert t_stale < t_exact - 0.3
    assert all(not r.stale and r.served == r.chunk for r in served_exact)
    assert stats["stale"] >= 3
    for r in served_stale:
        assert r.served in (r.chunk, r.chunk - 1, None)
        if r.stale and r.served is not None:
            assert [h.chunk_id for h in r.hits] == [h.chunk_id for h in rstore.query(chunks[r.served], 2)]
    # with a generous max_wait, stale mode waits for fresh neighbours
    with retro.Prefetcher(slow, k=2, mode="stale", max_wait=1.0) as pf:
        u = pf.submit(chunks[0])
        r = pf.get(u)
        assert not r.stale and r.waited > 0.05
    # work done between submit and get hides the search in exact mode too
    with retro.Prefetcher(slow, k=2) as pf:
        u = pf.submit(chunks[1])
        deadline = time.monotonic() + 10
        while not pf.ready(u) and time.monotonic() < deadline:
            time.sleep(0.02)  # the LM's own work
        assert pf.get(u).waited < 0.05
