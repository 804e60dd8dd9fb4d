"""In-context retrieval augmentation: prompts within a token budget of a real tokenizer."""

from __future__ import annotations

import pytest

import ragstore
from helpers import HashEmbedder, gpt2_style_tokenizer, tokenizer_path, wiki_docs
from ragstore.errors import InvalidInputError
from ragstore.retrieval.prompting import build_prompt, ralm_prompt
from ragstore.retrieval.retro import as_tokenizer


@pytest.fixture(scope="module")
def tokenizers_():
    # the MiniLM tokenizer.json pads and truncates to 128: counting must switch that off
    return {"minilm": tokenizer_path(), "gpt2": gpt2_style_tokenizer()}


@pytest.fixture(scope="module")
def qstore(tmp_path_factory):
    s = ragstore.open(tmp_path_factory.mktemp("prompt") / "s", embedder=HashEmbedder(), sync=False)
    s.add_many(ragstore.Doc(d["id"], d["text"], d["source"], {"title": d["title"]}) for d in wiki_docs(120))
    yield s
    s.close()


QUERY = "Question: Which French general led the conquest of the French Sudan?\nAnswer:"


@pytest.mark.parametrize("name", ["minilm", "gpt2"])
def test_budget_never_exceeded(qstore, tokenizers_, name):
    tok = as_tokenizer(tokenizers_[name])
    hits = qstore.query("French general conquest of the French Sudan", 6)
    base = tok.count(QUERY, add_special_tokens=True)
    full = [len(tok.encode(h.text)) for h in hits]
    saw_truncation = saw_drop = False
    for budget in range(base, base + sum(full) + 40, 7):
        p = build_prompt(QUERY, hits, tokenizer=tokenizers_[name], budget=budget)
        assert p.n_tokens == tok.count(p.text, add_special_tokens=True) <= budget
        assert p.passages == hits[: len(p.passages)]  # lowest-ranked dropped first
        assert p.dropped == len(hits) - len(p.passages)
        assert p.text.endswith(QUERY)
        whole = p.passages[:-1] if p.truncated else p.passages
        pos = 0
        for h in whole:  # kept passages appear whole and in rank order
            pos = p.text.index(h.text, pos) + len(h.text)
        if p.truncated:
            saw_truncation = True
            last = p.passages[-1].text
            shown = p.text[pos:].split("\n\n")[1] if whole else p.text.split("\n\n")[0]
            assert last.startswith(shown) and shown != last
            ids = tok.encode(shown)  # cut at a token boundary of the passage
            assert ids == tok.encode(last)[: len(ids)] and len(ids) == p.truncated_tokens >= 8
            assert budget - p.n_tokens <= 3  # the cut fills the budget
        if p.dropped:
            saw_drop = True
    assert saw_truncation and saw_drop
    roomy = build_prompt(QUERY, hits, tokenizer=tokenizers_[name], budget=100_000)
    assert roomy.passages == hits and not roomy.truncated and roomy.dropped == 0


def test_templates_and_order(qstore, tokenizers_):
    hits = qstore.query("a species of lobster from the Atlantic Ocean", 3)
    tok = tokenizers_["gpt2"]
    p = build_prompt(
        "Q: what is it?", hits, tokenizer=tok, budget=10_000,
        template="Background:\n{passages}\n\n{query}", passage_template="[{i}] {title} ({source}): {text}",
    )
    assert p.text.startswith("Background:\n[1] " + hits[0].meta["title"] + " (wikipedia): ")
    assert p.text.index("[1]") < p.text.index("[2]") < p.text.index("[3]")
    q = build_prompt("Q", hits, tokenizer=tok, budget=10_000, order="best_last")
    assert q.text.index(hits[0].text) > q.text.index(hits[-1].text)
    c = build_prompt("Q", hits, tokenizer=tok, budget=10_000, with_continuation=True)
    assert all(h.continuation is None or h.continuation in c.text for h in hits)
    none = build_prompt("Q", [], tokenizer=tok, budget=10)
    assert none.text == "Q" and none.passages == []
    no_trunc = build_prompt(QUERY, hits, tokenizer=tok, budget=60, truncate=False)
    assert not no_trunc.truncated and no_trunc.n_tokens <= 60
    with pytest.raises(InvalidInputError, match="budget"):
        build_prompt(QUERY, hits, tokenizer=tok, budget=5)
    with pytest.raises(InvalidInputError):
        build_prompt(QUERY, hits, tokenizer=tok, budget=100, template="{query}")
    with pytest.raises(InvalidInputError):
        build_prompt(QUERY, hits, tokenizer=tok, budget=0)
    with pytest.raises(InvalidInputError):
        build_prompt(QUERY, hits, tokenizer=tok, budget=100, order="random")


def test_special_tokens_are_counted(qstore, tokenizers_):
    hits = qstore.query("lobster", 4)
    tok = as_tokenizer(tokenizers_["minilm"])
    with_sp = build_prompt("lobster?", hits, tokenizer=tokenizers_["minilm"], budget=90)
    assert tok.count(with_sp.text, add_special_tokens=True) <= 90
    without = build_prompt("lobster?", hits, tokenizer=tokenizers_["minilm"], budget=90, add_special_tokens=False)
    assert tok.count(without.text) <= 90
    assert tok.count(without.text) >= tok.count(with_sp.text)  # [CLS]/[SEP] took room in the first


def test_ralm_prompt_queries_with_recent_tokens(qstore, tokenizers_):
    gpt2 = tokenizers_["gpt2"]
    doc = wiki_docs(2)[1]  # Gustave Borgnis-Desbordes
    prefix = "Some unrelated words about cooking pasta and tomatoes. " + doc["text"][:200]
    p = ralm_prompt(qstore, prefix, k=3, tokenizer=gpt2, budget=400, query_tokens=32)
    assert p.text.endswith(prefix) and p.n_tokens <= 400
    assert p.passages[0].doc_id == doc["id"]
    with pytest.raises(InvalidInputError):
        ralm_prompt(qstore, prefix, tokenizer=gpt2, budget=400, query_tokens=0)
