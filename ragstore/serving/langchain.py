"""A LangChain ``VectorStore`` backed by a ragstore store.

``pip install 'ragstore[langchain]'`` (langchain-core). It passes LangChain's
standard ``VectorStoreIntegrationTests`` (see tests/test_langchain.py)::

    from ragstore.serving.langchain import RagstoreVectorStore

    vs = RagstoreVectorStore("my.store", embedding=OpenAIEmbeddings())
    vs.add_documents(docs)                      # LangChain Documents
    vs.similarity_search("question", k=4)

How LangChain's model maps onto ragstore's (see docs/server.md):

- A LangChain ``Document`` is already a chunk (a text splitter made it), so
  each becomes one ragstore document stored as exactly **one chunk**: a store
  created here gets ``chunk_tokens = 2**20`` and a whitespace tokenizer, and
  the vector is LangChain's ``embed_documents([page_content])``, unchanged.
  (Opened on an existing store with a smaller ``chunk_tokens``, a long
  Document is cut into chunks embedded one by one; a search returns each
  Document once, at its best chunk's score.)
- ``Document.id`` is the ragstore document id (a uuid4 hex is made when
  absent); adding an existing id replaces it, as LangChain's contract says.
- ``metadata`` is kept as the document's ``meta`` (JSON-like values) and
  comes back equal.
- ragstore refuses blank text; a LangChain Document may be empty. Such a
  Document is stored with the text ``"(empty)"`` and its true
  ``page_content`` in the reserved meta key ``"__ragstore_page_content__"``;
  it is returned with its own (empty) content and metadata, and its vector is
  that of its own content.
- Scores from ``similarity_search_with_score`` are similarities (higher is
  better): cosine by default. Relevance scores map them into [0, 1].
- LangChain's ``Embeddings`` becomes the store's embedder through
  :class:`ragstore.embedders.CallableEmbedder`, named
  ``langchain:<module.Class>[/<model>]``; a store remembers it and refuses
  another model.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
    from pydantic import ConfigDict, Field
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"ragstore's LangChain adapter needs the 'langchain' extra ({e.name} is missing): "
        "pip install 'ragstore[langchain]'"
    ) from e

import numpy as np

from .. import Store
from ..embedders.base import CallableEmbedder
from ..errors import InvalidInputError
from ..types import Doc, Hit
from ._doors import DOCUMENT_CHUNK_TOKENS, EMPTY_TEXT, whitespace_tokenizer

__all__ = [
    "RagstoreVectorStore", "RagstoreRetriever", "DOCUMENT_CHUNK_TOKENS", "EMPTY_TEXT", "CONTENT_KEY",
    "whitespace_tokenizer",
]

CONTENT_KEY = "__ragstore_page_content__"


def _embedder_name(embedding: Embeddings) -> str:
    cls = type(embedding)
    name = f"langchain:{cls.__module__}.{cls.__qualname__}"
    for attr in ("model", "model_name", "model_id", "deployment"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str) and value:
            return f"{name}/{value}"
    return name


class RagstoreVectorStore(VectorStore):
    """LangChain ``VectorStore`` over a ragstore :class:`~ragstore.Store`.

    ``RagstoreVectorStore(path, embedding, *, store=None, embedder_name=None,
    dim=None, tokenizer=None, chunk_tokens=None, metric=None, readonly=False,
    lock_timeout=10.0, **store_kwargs)``

    - ``path``: the store's folder (created if missing); or pass an open
      ``store=`` instead (its embedder must be the same model as
      ``embedding``).
    - ``embedder_name``: the name recorded in the store (default
      ``langchain:<module.Class>[/<model>]``); ``dim`` skips the one
      ``embed_query`` call that measures the dimension.
    - ``tokenizer``, ``chunk_tokens``, ``metric``: for a new store only
      (defaults: whitespace tokenizer, one chunk per Document, cosine).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        embedding: Embeddings | None = None,
        *,
        store: Store | None = None,
        embedder_name: str | None = None,
        dim: int | None = None,
        tokenizer: Any = None,
        chunk_tokens: int | None = None,
        metric: str | None = None,
        readonly: bool = False,
        lock_timeout: float = 10.0,
        **store_kwargs: Any,
    ) -> None:
        if embedding is None:
            raise InvalidInputError("embedding is required: a LangChain Embeddings object")
        self._embedding = embedding
        self._tmpdir: str | None = None
        # LangChain's async methods run the sync ones in threads; writes go one at a
        # time (a Store's first write from two threads at once can fail with
        # StoreLockedError: its writer lock is taken outside its mutex).
        self._write_lock = threading.Lock()
        if store is not None:
            self.store = store
            self._owns_store = False
            return
        if path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="ragstore-langchain-")
            path = os.path.join(self._tmpdir, "store")
        path = os.fspath(path)
        if dim is None:
            dim = len(embedding.embed_query("dimension probe"))
        name = embedder_name or _embedder_name(embedding)
        fingerprint = hashlib.sha256(f"{name}/{dim}".encode()).hexdigest()[:16]
        embedder = CallableEmbedder(embedding.embed_documents, dim=int(dim), name=name, fingerprint=fingerprint)
        new = not os.path.exists(os.path.join(path, "data.mdb"))
        if new:
            tokenizer = tokenizer if tokenizer is not None else whitespace_tokenizer()
            chunk_tokens = chunk_tokens if chunk_tokens is not None else DOCUMENT_CHUNK_TOKENS
        self.store = Store(
            path, readonly=readonly, embedder=embedder, tokenizer=tokenizer, chunk_tokens=chunk_tokens,
            metric=metric, lock_timeout=lock_timeout, **store_kwargs,
        )
        self._owns_store = True

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the store (if this object opened it) and remove a temporary one."""
        if self._owns_store:
            self.store.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> RagstoreVectorStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # ------------------------------------------------------------------ writes
    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add (or replace, by id) Documents; returns their ids in order.

        Ids come from ``ids=`` (which takes precedence), else ``Document.id``,
        else a new uuid4 hex."""
        ids = kwargs.pop("ids", None)
        if ids is not None and len(ids) != len(documents):
            raise InvalidInputError(f"got {len(ids)} ids for {len(documents)} documents")
        out_ids = [
            str(i) if i is not None else (str(d.id) if d.id is not None else uuid.uuid4().hex)
            for i, d in zip(ids or [None] * len(documents), documents, strict=True)
        ]
        if not documents:
            return []
        texts, metas, single = [], [], []
        for d in documents:
            text = d.page_content if isinstance(d.page_content, str) else str(d.page_content)
            meta = dict(d.metadata or {})
            if CONTENT_KEY in meta:
                raise InvalidInputError(f"metadata key {CONTENT_KEY!r} is reserved by ragstore")
            if not text.strip():
                meta[CONTENT_KEY] = text
                stored = EMPTY_TEXT
            else:
                stored = text
            texts.append(stored)
            metas.append(meta)
            single.append(len(self.store.chunk(stored)) == 1)
        # One vector per Document, by LangChain's own call, for the one-chunk ones;
        # longer ones are embedded chunk by chunk by the store (same model).
        whole = [d.page_content for d, one in zip(documents, single, strict=True) if one]
        vecs = iter(np.asarray(self._embedding.embed_documents(whole), dtype=np.float32)) if whole else iter(())
        batch = [
            Doc(i, t, None, m, next(vecs)[None, :] if one else None)
            for i, t, m, one in zip(out_ids, texts, metas, single, strict=True)
        ]
        with self._write_lock:
            self.store.add_many(batch, replace=True)
        return out_ids

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        docs = [Document(page_content=t, metadata=(metadatas[i] if metadatas else {})) for i, t in enumerate(texts)]
        return self.add_documents(docs, ids=ids, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete these ids (missing ones are ignored); ``None`` deletes everything."""
        with self._write_lock:
            if ids is None:
                ids = list(self.store.doc_ids())
            self.store.delete_many([str(i) for i in ids], missing_ok=True)
        return True

    # ------------------------------------------------------------------ reads
    def _document(self, doc_id: str) -> Document | None:
        if doc_id not in self.store:
            return None
        d = self.store.get(doc_id)
        meta = dict(d.meta)
        text = meta.pop(CONTENT_KEY, d.text)
        return Document(id=d.id, page_content=text, metadata=meta)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        out, seen = [], set()
        for i in ids:
            i = str(i)
            if i in seen:
                continue
            seen.add(i)
            try:
                doc = self._document(i)
            except InvalidInputError:  # not a valid ragstore id: it cannot be stored either
                doc = None
            if doc is not None:
                out.append(doc)
        return out

    def _search(
        self,
        vector: Sequence[float],
        k: int,
        *,
        filter: dict[str, Any] | Callable[[Document], bool] | None = None,
        sources: Sequence[str] | None = None,
        exclude_docs: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The k best distinct Documents (a Document may hold several chunks)."""
        if k < 1:
            return []
        q = np.asarray(vector, dtype=np.float32)
        excluded = set(exclude_docs or ())
        out: list[tuple[Document, float]] = []
        total = len(self.store)
        fetch = k if filter is None else max(4 * k, 20)
        while len(out) < k and len(excluded) < total:
            hits: list[Hit] = self.store.query(q, fetch, sources=sources, exclude_docs=excluded)
            if not hits:
                break
            for h in hits:
                if h.doc_id in excluded:
                    continue  # an earlier chunk of the same document scored higher
                excluded.add(h.doc_id)
                doc = self._document(h.doc_id)
                if doc is None or not _matches(doc, filter):
                    continue
                out.append((doc, h.score))
                if len(out) == k:
                    break
            fetch = min(fetch * 2, 10_000)
        return out

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Documents and their similarity (higher is better). Keyword arguments:
        ``filter`` (metadata dict to match exactly, or a predicate; applied
        after the search, which widens until k Documents pass), ``sources``,
        ``exclude_docs``."""
        return self._search(self._embedding.embed_query(query), k, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self._search(embedding, k, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return self._search(embedding, k, **kwargs)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.store.config.metric == "l2sq":
            return lambda s: max(0.0, 1.0 - math.sqrt(max(0.0, -s)) / math.sqrt(2))
        return lambda s: min(1.0, max(0.0, (1.0 + s) / 2.0))

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR over the ``fetch_k`` nearest Documents, re-embedded with ``embed_documents``
        (the store keeps no per-Document vector to hand back)."""
        cands = self._search(embedding, max(fetch_k, k), **kwargs)
        if not cands:
            return []
        vecs = np.asarray(self._embedding.embed_documents([d.page_content for d, _ in cands]), dtype=np.float32)
        # annotated list[list[float]], but it takes any 2-D array (it calls np.array on it)
        picked = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vecs,  # type: ignore[arg-type]
                                            lambda_mult=lambda_mult, k=k)
        return [cands[i][0] for i in picked]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, **kwargs
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> RagstoreVectorStore:
        """A store at ``path`` (a temporary folder, removed at ``close()``, if None) holding ``texts``."""
        vs = cls(path, embedding, **kwargs)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs


def _matches(doc: Document, filter: Any) -> bool:
    if filter is None:
        return True
    if callable(filter):
        return bool(filter(doc))
    return all(doc.metadata.get(key) == value for key, value in filter.items())


class RagstoreRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`RagstoreVectorStore`: the ``k`` nearest Documents.

    ``RagstoreRetriever(vectorstore=vs, k=4, search_kwargs={})``; ``invoke(query, k=...)``
    overrides ``k`` for one call, and other keywords given to ``invoke`` (``filter``,
    ``sources``, ``exclude_docs``) override ``search_kwargs``. Each Document's similarity
    is in ``metadata["score"]`` when ``with_scores=True``.

    Unlike ``vs.as_retriever()`` (LangChain's generic wrapper, which takes ``k`` only
    through ``search_kwargs``), ``k`` is a field, as LangChain's retriever tests expect.
    """

    # the vector store is a plain Python object, not a pydantic model
    model_config = ConfigDict(arbitrary_types_allowed=True)

    vectorstore: RagstoreVectorStore
    k: int = 4
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    with_scores: bool = False

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = kwargs.pop("k", self.k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidInputError(f"k must be a non-negative integer, got {k!r}")
        found = self.vectorstore.similarity_search_with_score(query, k, **{**self.search_kwargs, **kwargs})
        if not self.with_scores:
            return [d for d, _ in found]
        return [Document(id=d.id, page_content=d.page_content, metadata={**d.metadata, "score": s})
                for d, s in found]
