"""Query options beyond the basics: per-query exclusions in a batch."""

import pytest

import ragstore


def test_query_many_per_query_exclusions(store):
    store.add("a", "red apples and green pears")
    store.add("b", "red apples and yellow bananas")
    store.add("c", "blue sky over the sea")
    qs = ["red apples and green pears", "red apples and yellow bananas"]
    own = store.query_many(qs, k=1)
    assert [h[0].doc_id for h in own] == ["a", "b"]
    # each query excludes its own document: RETRO's same-document exclusion in one batch
    other = store.query_many(qs, k=1, exclude_docs=[["a"], ["b"]])
    assert [h[0].doc_id for h in other] == ["b", "a"]
    exact = store.query_many(qs, k=1, exclude_docs=[["a"], ["b"]], exact=True)
    assert [h[0].doc_id for h in exact] == ["b", "a"]
    # a flat list applies to every query
    flat = store.query_many(qs, k=1, exclude_docs=["a", "b"])
    assert [h[0].doc_id for h in flat] == ["c", "c"]
    with pytest.raises(ragstore.InvalidInputError, match="per-query sets for 2 queries"):
        store.query_many(qs, k=1, exclude_docs=[["a"]])
