"""ragstore's LangChain VectorStore against LangChain's own standard tests.

Skipped cleanly when the 'langchain' extra (langchain-core, langchain-tests)
is not installed.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")
pytest.importorskip("pytest_asyncio")  # the standard suite has async tests

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests  # noqa: E402

from ragstore.serving.langchain import CONTENT_KEY, RagstoreRetriever, RagstoreVectorStore  # noqa: E402


class TestRagstoreVectorStoreStandard(VectorStoreIntegrationTests):
    # The suite's async tests carry no marker (LangChain runs with asyncio_mode=auto).
    pytestmark = [
        pytest.mark.asyncio,
        pytest.mark.filterwarnings("ignore:The test <Function:pytest.PytestWarning"),
    ]

    @pytest.fixture()
    def vectorstore(self, tmp_path):  # type: ignore[override]
        vs = RagstoreVectorStore(tmp_path / "lc", self.get_embeddings())
        try:
            yield vs
        finally:
            vs.close()


class TestRagstoreRetrieverStandard(RetrieversIntegrationTests):
    pytestmark = [
        pytest.mark.asyncio,
        pytest.mark.filterwarnings("ignore:The test <Function:pytest.PytestWarning"),
    ]

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path):
        # the suite builds retrievers from retriever_constructor_params (a property, no fixtures):
        # each test gets a store of five Documents made here
        self._vs = RagstoreVectorStore(tmp_path / "lc", VectorStoreIntegrationTests.get_embeddings())
        self._vs.add_texts([f"owls and foxes hunt at night, note {i}" for i in range(5)])
        try:
            yield
        finally:
            self._vs.close()

    @property
    def retriever_constructor(self) -> type[RagstoreRetriever]:
        return RagstoreRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": self._vs}

    @property
    def retriever_query_example(self) -> str:
        return "what hunts at night?"


@pytest.fixture()
def vs(tmp_path):
    with RagstoreVectorStore(tmp_path / "lc", VectorStoreIntegrationTests.get_embeddings()) as v:
        yield v


def test_empty_and_duplicate_documents_round_trip(vs):
    docs = [
        Document(page_content="", metadata={"k": "empty"}),
        Document(page_content="   \n", metadata={"k": "blank"}),
        Document(page_content="same", metadata={"k": 1}),
        Document(page_content="same", metadata={"k": 2}),
    ]
    ids = vs.add_documents(docs)
    assert len(set(ids)) == 4
    got = {d.id: d for d in vs.get_by_ids(ids)}
    for i, d in zip(ids, docs, strict=True):
        assert got[i].page_content == d.page_content
        assert got[i].metadata == d.metadata
        assert CONTENT_KEY not in got[i].metadata
    # the empty Document is found by its own vector
    assert vs.similarity_search("", k=1)[0].metadata == {"k": "empty"}


def test_metadata_and_whitespace_round_trip(vs):
    doc = Document(page_content="  padded text\n", metadata={"a": [1, 2], "b": {"c": None}, "d": 1.5})
    [i] = vs.add_documents([doc], ids=["x/y"])
    [back] = vs.get_by_ids([i])
    assert back == Document(
        id="x/y", page_content="  padded text\n", metadata={"a": [1, 2], "b": {"c": None}, "d": 1.5}
    )


def test_each_document_is_one_chunk(vs):
    long = " ".join(f"w{i}" for i in range(5000))
    vs.add_documents([Document(page_content=long)], ids=["long"])
    assert vs.store.get("long").n_chunks == 1
    assert vs.similarity_search(long, k=1)[0].page_content == long


def test_scores_filter_mmr_and_delete_all(vs):
    vs.add_texts(["alpha", "beta", "gamma"], [{"g": 1}, {"g": 2}, {"g": 1}], ids=["a", "b", "c"])
    (doc, score), *_ = vs.similarity_search_with_score("beta", k=3)
    assert doc.id == "b" and score == pytest.approx(1.0, abs=1e-5)
    rel = vs.similarity_search_with_relevance_scores("beta", k=3)
    assert all(0.0 <= s <= 1.0 for _, s in rel)
    assert [d.id for d in vs.similarity_search("beta", k=3, filter={"g": 1})] in (["a", "c"], ["c", "a"])
    assert len(vs.max_marginal_relevance_search("alpha", k=2, fetch_k=3)) == 2
    vs.delete()
    assert vs.similarity_search("alpha", k=1) == []


def test_from_texts_in_a_temporary_folder():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    vs = RagstoreVectorStore.from_texts(["one", "two"], DeterministicFakeEmbedding(size=8), ids=["1", "2"])
    try:
        assert vs.similarity_search("two", k=1)[0].id == "2"
    finally:
        vs.close()


def test_reopen_refuses_another_embedding_model(tmp_path):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    import ragstore

    RagstoreVectorStore(tmp_path / "s", DeterministicFakeEmbedding(size=8)).close()
    with pytest.raises(ragstore.ConfigMismatchError):
        RagstoreVectorStore(tmp_path / "s", DeterministicFakeEmbedding(size=16))
    with RagstoreVectorStore(tmp_path / "s", DeterministicFakeEmbedding(size=8)) as again:
        assert again.similarity_search("x", k=1) == []


def test_retriever_k_filter_and_scores(vs):
    vs.add_texts(["alpha", "beta", "gamma"], [{"g": 1}, {"g": 2}, {"g": 1}], ids=["a", "b", "c"])
    r = RagstoreRetriever(vectorstore=vs, k=2, search_kwargs={"filter": {"g": 1}}, with_scores=True)
    got = r.invoke("alpha")
    assert [d.id for d in got] == ["a", "c"]
    assert got[0].metadata["g"] == 1 and got[0].metadata["score"] == pytest.approx(1.0, abs=1e-5)
    assert [d.id for d in r.invoke("beta", k=3, filter=None)][0] == "b"  # invoke's keywords win
    assert r.invoke("alpha", k=0) == []
    with pytest.raises(ValueError):
        r.invoke("alpha", k=-1)
