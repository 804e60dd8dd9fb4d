"""ragstore's Haystack DocumentStore against Haystack's own document-store suite.

Skipped cleanly when the 'haystack' extra (haystack-ai) is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from haystack.dataclasses import ByteStream, SparseEmbedding  # noqa: E402
from haystack.document_stores.errors import DuplicateDocumentError  # noqa: E402
from haystack.document_stores.types import DuplicatePolicy  # noqa: E402
from haystack.errors import FilterError  # noqa: E402
from haystack.testing.document_store import CountDocumentsByFilterTest, DocumentStoreBaseExtendedTests  # noqa: E402
from haystack.testing.document_store_async import (  # noqa: E402
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
)

from ragstore import RagstoreError  # noqa: E402
from ragstore.serving.haystack import (  # noqa: E402
    HAYSTACK_KEY,
    RagstoreDocumentStore,
    RagstoreEmbeddingRetriever,
    RagstoreTextEmbedder,
)
from ragstore.testing import HashEmbedder  # noqa: E402


def _equal_by_id(received: list[Document], expected: list[Document]) -> None:
    # filter_documents returns Documents in the byte order of their ids, not in the order written
    # (the suites' hook for stores whose order differs); each Document must still be equal
    assert sorted(received, key=lambda d: d.id) == sorted(expected, key=lambda d: d.id)


@pytest.fixture()
def ds(tmp_path):
    with RagstoreDocumentStore(tmp_path / "hs", embedder=HashEmbedder()) as d:
        yield d


class TestRagstoreDocumentStore(DocumentStoreBaseExtendedTests, CountDocumentsByFilterTest):
    @pytest.fixture()
    def document_store(self, tmp_path):  # type: ignore[override]
        with RagstoreDocumentStore(tmp_path / "hs", embedder=HashEmbedder()) as d:
            yield d

    assert_documents_are_equal = staticmethod(_equal_by_id)

    def test_write_documents(self, document_store):
        # the suite leaves the default policy to the store: NONE means FAIL, as in Haystack's in-memory store
        doc = Document(content="test doc")
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([doc])
        self.assert_documents_are_equal(document_store.filter_documents(), [doc])


class TestRagstoreDocumentStoreAsync(
    CountDocumentsAsyncTest, CountDocumentsByFilterAsyncTest, DeleteAllAsyncTest, DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest, FilterDocumentsAsyncTest, UpdateByFilterAsyncTest, WriteDocumentsAsyncTest,
):
    """Haystack's async suites (the AsyncDocumentStore methods run the sync ones in threads)."""

    pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytest_asyncio") is None,
                                    reason="the async suites need pytest-asyncio (the test extra)")

    @pytest.fixture()
    def document_store(self, tmp_path):
        with RagstoreDocumentStore(tmp_path / "hs", embedder=HashEmbedder()) as d:
            yield d

    assert_documents_are_equal = staticmethod(_equal_by_id)

    @pytest.mark.asyncio
    async def test_write_documents_async(self, document_store):
        doc = Document(content="test doc")
        assert await document_store.write_documents_async([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            await document_store.write_documents_async([doc])
        self.assert_documents_are_equal(await document_store.filter_documents_async(), [doc])

def test_every_field_round_trips(ds):
    docs = [
        Document(id="full", content="owls hunt at night", meta={"a": [1, 2], "b": {"c": None}}, score=0.5,
                 embedding=[0.1, 0.2, 0.3], sparse_embedding=SparseEmbedding(indices=[1, 5], values=[0.5, 0.25])),
        Document(id="blob", blob=ByteStream(b"\x00\x01binary", mime_type="application/octet-stream"),
                 meta={"kind": "blob"}),
        Document(id="empty", content=""),
        Document(id="blank", content="  \n"),
        Document(id="padded", content="  padded text\n"),
    ]
    assert ds.write_documents(docs) == 5
    got = {d.id: d for d in ds.filter_documents()}
    assert got == {d.id: d for d in docs}
    assert all(HAYSTACK_KEY not in d.meta for d in got.values())
    # the text ragstore stores, and that the store's embedder embedded
    assert ds.store.get("blob").text == "(empty)" and ds.store.get("full").text == "owls hunt at night"


def test_duplicate_policies_within_one_batch(ds):
    a1, a2 = Document(id="a", content="first"), Document(id="a", content="second")
    with pytest.raises(DuplicateDocumentError) as e:
        ds.write_documents([a1, a2], policy=DuplicatePolicy.FAIL)
    assert isinstance(e.value, RagstoreError)
    assert ds.count_documents() == 0  # nothing written when one fails
    assert ds.write_documents([a1, a2], policy=DuplicatePolicy.SKIP) == 1
    assert ds.filter_documents()[0].content == "first"
    assert ds.write_documents([a1, a2], policy=DuplicatePolicy.OVERWRITE) == 1
    assert ds.filter_documents()[0].content == "second"


def test_malformed_filters_raise_on_an_empty_store(ds):
    for bad in ({"operator": "AND"}, {"field": "meta.x", "operator": "~", "value": 1}, {"operator": "XOR",
                                                                                         "conditions": []}):
        with pytest.raises(FilterError):
            ds.filter_documents(bad)
    ds.write_documents([Document(content="x", meta={"n": 1})])
    for empty in (None, {}):  # never read as "every Document"
        with pytest.raises(FilterError):
            ds.delete_by_filter(empty)
        with pytest.raises(FilterError):
            ds.update_by_filter(empty, {"n": 2})
    assert ds.filter_documents() == [Document(content="x", meta={"n": 1})]
    with pytest.raises(RagstoreError):  # a type error found while evaluating: also a ragstore error
        ds.filter_documents({"field": "meta.n", "operator": ">", "value": "1"})


def test_update_by_filter_keeps_the_vector_and_content(ds):
    ds.write_documents([Document(id="d", content="owls hunt", meta={"k": 1}, embedding=[1.0, 2.0])])
    before = ds.store.vectors("d")
    assert ds.update_by_filter({"field": "meta.k", "operator": "==", "value": 1}, {"seen": True}) == 1
    [d] = ds.filter_documents()
    assert d.meta == {"k": 1, "seen": True} and d.content == "owls hunt" and d.embedding == [1.0, 2.0]
    assert (ds.store.vectors("d") == before).all()


def test_embedding_retrieval_with_filters_and_scores(ds):
    ds.write_documents([
        Document(id=str(i), content=f"{w} document", meta={"group": i % 2})
        for i, w in enumerate(["owls", "foxes", "ships", "owls owls", "trains"])
    ])
    q = ds.store.embed(["owls"])[0].tolist()
    top = ds.embedding_retrieval(q, top_k=2)
    assert {d.id for d in top} == {"0", "3"} and top[0].score >= top[1].score
    odd = ds.embedding_retrieval(q, filters={"field": "meta.group", "operator": "==", "value": 1}, top_k=2)
    assert [d.meta["group"] for d in odd] == [1, 1] and odd[0].id == "3"
    scaled = ds.embedding_retrieval(q, top_k=5, scale_score=True)
    assert len(scaled) == 5 and all(0.0 <= d.score <= 1.0 for d in scaled)
    assert ds.embedding_retrieval(q, top_k=0) == []


def test_pipeline_embeds_and_retrieves(ds, tmp_path):
    ds.write_documents([
        Document(content="The owl hunts mice at night.", meta={"topic": "birds"}),
        Document(content="A cargo ship crossed the ocean.", meta={"topic": "sea"}),
        Document(content="Owls can turn their heads.", meta={"topic": "birds"}),
    ])
    p = Pipeline()
    p.add_component("embedder", RagstoreTextEmbedder(ds))
    p.add_component("retriever", RagstoreEmbeddingRetriever(ds, top_k=2))
    p.connect("embedder.embedding", "retriever.query_embedding")
    out = p.run({"embedder": {"text": "owl at night"}})
    docs = out["retriever"]["documents"]
    assert len(docs) == 2 and docs[0].content == "The owl hunts mice at night."
    out = p.run({"embedder": {"text": "ocean"},
                 "retriever": {"filters": {"field": "meta.topic", "operator": "==", "value": "sea"}, "top_k": 5}})
    assert [d.meta["topic"] for d in out["retriever"]["documents"]] == ["sea"]


def test_serialization_round_trip(tmp_path):
    with RagstoreDocumentStore(tmp_path / "s", embedder=HashEmbedder()) as ds:
        ds.write_documents([Document(id="1", content="hello")])
        data = ds.to_dict()
    assert data["type"] == "ragstore.serving.haystack.RagstoreDocumentStore"
    assert data["init_parameters"]["path"] == str(tmp_path / "s")
    with RagstoreDocumentStore.from_dict(data) as again:  # reopens with the store's recorded settings
        assert again.filter_documents() == [Document(id="1", content="hello")]
        r = RagstoreEmbeddingRetriever(again, top_k=3)
        r2 = RagstoreEmbeddingRetriever.from_dict(r.to_dict())
        assert r2.top_k == 3 and r2.document_store.to_dict() == data
        r2.document_store.close()


@pytest.mark.skipif(importlib.util.find_spec("pytest_asyncio") is None, reason="needs pytest-asyncio")
@pytest.mark.asyncio
async def test_async_pipeline(ds):
    await ds.write_documents_async([Document(content="The owl hunts mice at night."),
                                    Document(content="A cargo ship crossed the ocean.")])
    try:  # Haystack 2: a separate AsyncPipeline; Haystack 3: Pipeline.run_async
        from haystack import AsyncPipeline as Pipe  # type: ignore[attr-defined]
    except ImportError:
        Pipe = Pipeline
    p = Pipe()
    p.add_component("embedder", RagstoreTextEmbedder(ds))
    p.add_component("retriever", RagstoreEmbeddingRetriever(ds, top_k=1))
    p.connect("embedder.embedding", "retriever.query_embedding")
    out = await p.run_async({"embedder": {"text": "owl at night"}})
    assert [d.content for d in out["retriever"]["documents"]] == ["The owl hunts mice at night."]
