"""In-Context RALM perplexity (ragstore.retrieval.ralm) with a tiny deterministic fake LM,
plus a smoke test of the real GGUF LM when the optional ``ralm`` extra is installed."""

import importlib.util
import math

import numpy as np
import pytest

from helpers import wiki_docs
from ragstore.errors import InvalidInputError, RagstoreError
from ragstore.retrieval import ralm
from ragstore.retrieval.pipeline import subsample_keep
from ragstore.types import Hit


class BigramLM:
    """Word-level bigram LM whose counts come from its own context: deterministic, and
    it gets better when a retrieved passage holds the words that follow."""

    V = 5000  # fixed vocabulary size so every distribution sums to one

    def __init__(self, max_context=10_000):
        self.max_context = max_context
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []
        self.calls: list[tuple[list[int], list[int]]] = []

    def tokenize(self, text):
        out = []
        for w in text.split():
            if w not in self.vocab:
                self.vocab[w] = len(self.words)
                self.words.append(w)
            out.append(self.vocab[w])
        return out

    def detokenize(self, ids):
        return " ".join(self.words[i] for i in ids)

    def logprobs(self, context, targets):
        self.calls.append((list(context), list(targets)))
        hist = list(context)
        out = []
        for t in targets:
            prev = hist[-1] if hist else None
            pairs = sum(1 for a, b in zip(hist, hist[1:], strict=False) if a == prev and b == t)
            seen = sum(1 for a in hist[:-1] if a == prev)
            out.append(math.log((pairs + 0.1) / (seen + 0.1 * self.V)))
            hist.append(t)
        return np.array(out)


def _hit(i, text, continuation=None):
    return Hit(chunk_id=i, doc_id=f"d{i}", source="wikipedia", position=0, score=1.0 - i / 1000,
               text=text, continuation=continuation, start=0, end=len(text))


class FakeStore:
    """Answers every query with ``hits`` (the same list), and records the calls."""

    def __init__(self, hits):
        self.hits = hits
        self.calls = []

    def query_many(self, queries, k, sources=None):
        self.calls.append((list(queries), k, sources))
        return [list(self.hits[:k]) for _ in queries]


TEXTS = [" ".join(f"w{i % 37}" for i in range(301)), " ".join(f"v{i % 11} x{i % 5}" for i in range(53))]


def test_every_token_scored_once_within_window():
    lm = BigramLM()
    res = ralm.perplexity(lm, FakeStore([_hit(1, "a b c", "d e")]), TEXTS, window=40, stride=16, query_tokens=8, k=1)
    ids = [lm.tokenize(t) for t in TEXTS]
    # the calls go text by text, stride by stride: their targets concatenate to each text exactly
    got, i = [], 0
    for t in ids:
        seq = []
        while len(seq) < len(t):
            ctx, tgt = lm.calls[i]
            assert len(ctx) + len(tgt) <= 40
            seq.extend(tgt)
            i += 1
        got.append(seq)
    assert got == ids and i == len(lm.calls)
    assert res.tokens == sum(map(len, ids)) == sum(r[1] for r in res.per_stride)
    assert res.strides == res.lm_calls == sum(math.ceil(len(t) / 16) for t in ids)
    assert all(len(tgt) <= 16 for _, tgt in lm.calls)


def test_queries_are_last_query_tokens_of_prefix_in_one_batch():
    lm = BigramLM()
    store = FakeStore([_hit(1, "a b c")])
    ralm.perplexity(lm, store, TEXTS, window=40, stride=16, query_tokens=8, k=2, sources=["wikipedia"])
    ids = [lm.tokenize(t) for t in TEXTS]
    want = [lm.detokenize(t[max(0, s - 8):s]) for t in ids for s in range(16, len(t), 16)]
    assert len(store.calls) == 1  # one batched search for all strides
    queries, k, sources = store.calls[0]
    assert queries == want and k == 2 and sources == ["wikipedia"]


def test_passage_is_prepended_and_prefix_fills_the_rest():
    lm = BigramLM()
    ralm.perplexity(lm, FakeStore([_hit(1, "p q r", "s t")]), TEXTS[:1], window=40, stride=16, query_tokens=8,
                    separator="||")
    passage = lm.tokenize("p q r s t ||")
    ids = lm.tokenize(TEXTS[0])
    first_ctx, _ = lm.calls[0]
    assert first_ctx == []  # nothing to query with before the first token
    for j, (ctx, tgt) in enumerate(lm.calls[1:], start=1):
        s = 16 * j
        assert ctx[: len(passage)] == passage
        prefix = ctx[len(passage):]
        assert prefix == ids[s - len(prefix):s] and len(ctx) + len(tgt) == min(40, len(passage) + s + len(tgt))


def test_baseline_is_k0_and_no_store():
    a = ralm.perplexity(BigramLM(), None, TEXTS, window=40, stride=16)
    store = FakeStore([_hit(1, "a b")])
    b = ralm.perplexity(BigramLM(), store, TEXTS, window=40, stride=16, k=0)
    assert store.calls == []
    assert a.ppl == b.ppl and a.tokens == b.tokens and a.retrieved == b.retrieved == 0 and a.queries == 0


def test_retrieving_the_text_lowers_perplexity_and_continuation_is_used():
    text = TEXTS[0]
    words = text.split()
    # a neighbour holding the text the stride needs: its chunk and continuation
    hit = _hit(1, " ".join(words[:40]), " ".join(words[40:80]))
    base = ralm.perplexity(BigramLM(), None, [text], window=48, stride=16)
    with_f = ralm.perplexity(BigramLM(), FakeStore([hit]), [text], window=48, stride=16, max_passage_tokens=30)
    no_f = ralm.perplexity(BigramLM(), FakeStore([hit]), [text], window=48, stride=16, with_continuation=False,
                           max_passage_tokens=30)
    assert with_f.ppl < base.ppl and with_f.retrieved == with_f.strides - 1
    assert with_f.passage_tokens <= 30 and no_f.passage_tokens <= 30


def test_leakage_filter_drops_copies_of_the_targets():
    text = TEXTS[0]
    copy = _hit(1, text)  # contains every target verbatim: leakage 1
    unrelated = _hit(2, "zz yy xx")
    store = FakeStore([copy, unrelated])
    kw = dict(window=200, stride=16, k=1, max_passage_tokens=150)
    res = ralm.perplexity(BigramLM(), store, [text], leakage_max_overlap=0.25, **kw)
    assert res.dropped_leakage == res.queries and res.retrieved == res.queries
    kept = ralm.perplexity(BigramLM(), store, [text], **kw)
    assert kept.ppl < res.ppl and kept.dropped_leakage == 0


def test_subsample_uses_the_pipelines_consistent_hash():
    hits = [_hit(i, f"h{i} a") for i in range(64)]
    store = FakeStore(hits)
    res = ralm.perplexity(BigramLM(), store, TEXTS[:1], window=40, stride=16, k=1, subsample=0.1, seed=3, fetch_k=64)
    kept = int(subsample_keep([h.chunk_id for h in hits], 0.1, 3).sum())
    assert res.dropped_subsample == res.queries * (64 - kept)
    none = ralm.perplexity(BigramLM(), store, TEXTS[:1], window=40, stride=16, k=1, subsample=0.0, fetch_k=64)
    base = ralm.perplexity(BigramLM(), None, TEXTS[:1], window=40, stride=16)
    assert none.retrieved == 0 and none.no_passage == none.queries and none.ppl == base.ppl


@pytest.mark.parametrize("kw", [dict(stride=40), dict(window=1), dict(k=-1), dict(leakage_max_overlap=2.0),
                                dict(window=20_000), dict(max_passage_tokens=39)])
def test_bad_arguments(kw):
    args = dict(window=40, stride=16) | kw
    with pytest.raises(InvalidInputError):
        ralm.perplexity(BigramLM(), None, TEXTS, **args)
    with pytest.raises(InvalidInputError):
        ralm.perplexity(BigramLM(), None, "one string")


def test_on_a_real_store(store):
    docs = wiki_docs(5)
    for d in docs:
        store.add(d["id"], d["text"][:2000], source="wikipedia")
    text = docs[0]["text"][:1500]  # stored: retrieval finds it, the filter removes it
    lm = BigramLM()
    base = ralm.perplexity(lm, None, [text], window=96, stride=32)
    rag = ralm.perplexity(lm, store, [text], window=96, stride=32, k=1)
    filt = ralm.perplexity(lm, store, [text], window=96, stride=32, k=1, leakage_max_overlap=0.1)
    assert rag.retrieved == rag.queries > 0 and rag.ppl < base.ppl
    assert filt.dropped_leakage > 0


GGUF_MISSING = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(GGUF_MISSING), reason=f"the optional 'ralm' extra is not installed (missing: "
                    f"{', '.join(GGUF_MISSING)}); pip install -e '.[ralm]' to run the real-LM smoke test")
def test_real_gguf_lm_smoke():
    # most of its time is transformers dequantizing the GGUF on load: 24 s at load average 3 on 2 cores
    from ragstore.retrieval import lm_gguf

    try:
        lm = lm_gguf.GGUFLM(threads=1)
    except lm_gguf.LMNotAvailableError as e:
        pytest.skip(str(e))
    assert isinstance(lm, ralm.LM)
    text = "The cat sat on the mat. The dog sat on the log. The cat sat on the mat again."
    ids = lm.tokenize(text)
    assert lm.detokenize(ids) == text
    lp = lm.logprobs([], ids[:4])
    assert lp.shape == (4,) and np.all(lp < 0)
    hit = _hit(1, text)
    base = ralm.perplexity(lm, None, [text], window=32, stride=8)
    rag = ralm.perplexity(lm, FakeStore([hit]), [text], window=32, stride=8, max_passage_tokens=20)
    assert 1 < rag.ppl < base.ppl < 1e4  # a copy of the text in context makes it easier


def test_missing_lm_runtime_is_a_ragstore_error(monkeypatch):
    from ragstore.retrieval import lm_gguf

    real = lm_gguf.importlib.import_module

    def fake(name, *a):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real(name, *a)

    monkeypatch.setattr(lm_gguf.importlib, "import_module", fake)
    with pytest.raises(RagstoreError, match=r"ragstore\[ralm\]"):
        lm_gguf.GGUFLM()
