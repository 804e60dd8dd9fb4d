"""A Haystack ``DocumentStore`` backed by a ragstore store, and components to search it.

``pip install 'ragstore[haystack]'`` (haystack-ai). It passes Haystack's
``DocumentStoreBaseExtendedTests`` and ``CountDocumentsByFilterTest`` (see
tests/test_haystack.py)::

    from haystack import Pipeline
    from ragstore.serving.haystack import (
        RagstoreDocumentStore, RagstoreEmbeddingRetriever, RagstoreTextEmbedder)

    ds = RagstoreDocumentStore("my.store")            # embedder: the store's ("minilm-int8" when new)
    ds.write_documents(docs)                           # Haystack Documents
    p = Pipeline()
    p.add_component("embedder", RagstoreTextEmbedder(ds))
    p.add_component("retriever", RagstoreEmbeddingRetriever(ds, top_k=3))
    p.connect("embedder.embedding", "retriever.query_embedding")
    p.run({"embedder": {"text": "question"}})["retriever"]["documents"]

How Haystack's model maps onto ragstore's (docs/integrations.md says why):

- A Haystack ``Document`` is already a chunk (a ``DocumentSplitter`` made it):
  each becomes one ragstore document, stored as **one chunk** in a store this
  class creates (``chunk_tokens = 2**20``, a whitespace tokenizer), unless the
  embedder reads a bounded number of tokens (MiniLM: 256): then the store's
  own chunking cuts long ones, and a search returns each Document once.
- ``Document.id`` is the ragstore document id; ``content`` is its text;
  ``meta`` is its meta, with the Haystack fields ragstore has no place for
  (``embedding``, ``blob``, ``sparse_embedding``, ``score``, and ``content``
  when it is not the stored text) under the reserved meta key
  ``"__haystack__"``. Every field comes back equal.
- **Vectors**: the store's own embedder embeds ``content``; that is what
  :class:`RagstoreEmbeddingRetriever` searches, with query vectors from
  :class:`RagstoreTextEmbedder` (the same model). A Document's own
  ``embedding`` (any dimension, or none) is kept and returned as given but not
  searched: vectors of another model are not comparable with the store's.
- Documents without text (``content`` None, blob only, or blank): ragstore
  refuses blank text, so the stored text is ``"(empty)"`` (embedded as such,
  so they rank like that word) and the real ``content`` is kept in meta.
- **Filters** (Haystack's filter language, in full) are evaluated here, over
  each candidate Document, by Haystack's own reference evaluator
  (``haystack.utils.filters.document_matches_filter``): ``filter_documents``
  and the ``*_by_filter`` methods read every document; a filtered search
  widens until ``top_k`` Documents pass. Filters inside the engine are planned.
- ``filter_documents`` returns Documents in the byte order of their ids.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

try:
    from haystack import component, default_from_dict, default_to_dict
    from haystack.dataclasses import ByteStream, Document, SparseEmbedding
    from haystack.document_stores.errors import DuplicateDocumentError
    from haystack.document_stores.types import DuplicatePolicy
    from haystack.errors import FilterError
    from haystack.utils.filters import document_matches_filter
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"ragstore's Haystack adapter needs the 'haystack' extra ({e.name} is missing): "
        "pip install 'ragstore[haystack]'"
    ) from e

import numpy as np

from .. import Store
from ..errors import AlreadyExistsError, InvalidInputError
from ..types import Doc
from ._doors import EMPTY_TEXT, new_store_layout

__all__ = [
    "RagstoreDocumentStore",
    "RagstoreEmbeddingRetriever",
    "RagstoreTextEmbedder",
    "HAYSTACK_KEY",
    "DuplicateError",
    "HaystackFilterError",
]

HAYSTACK_KEY = "__haystack__"

_COMPARISONS = {"==", "!=", ">", ">=", "<", "<=", "in", "not in"}
_LOGIC = {"AND", "OR", "NOT"}


class DuplicateError(AlreadyExistsError, DuplicateDocumentError):
    """A Document id is already stored (``DuplicatePolicy.FAIL``): both a ragstore and a Haystack error."""


class HaystackFilterError(InvalidInputError, FilterError):
    """A malformed Haystack filter, or one comparing values that cannot be compared."""


def _check_filters(filters: Any, where: str = "filters") -> None:
    """Refuse malformed filters up front, even on an empty store (evaluation finds the rest)."""
    if not isinstance(filters, dict):
        raise HaystackFilterError(f"{where} must be a dict, got {type(filters).__name__}")
    if "field" in filters:
        for key in ("operator", "value"):
            if key not in filters:
                raise HaystackFilterError(f"{where}: a comparison needs 'field', 'operator' and 'value'; no {key!r}")
        if filters["operator"] not in _COMPARISONS:
            raise HaystackFilterError(f"{where}: unknown comparison operator {filters['operator']!r}")
        return
    if "operator" not in filters or "conditions" not in filters:
        raise HaystackFilterError(
            f"{where}: a logical condition needs 'operator' and 'conditions' (or a comparison: 'field', 'operator', "
            "'value'); see https://docs.haystack.deepset.ai/docs/metadata-filtering"
        )
    if filters["operator"] not in _LOGIC:
        raise HaystackFilterError(f"{where}: unknown logical operator {filters['operator']!r}")
    if not isinstance(filters["conditions"], list):
        raise HaystackFilterError(f"{where}: 'conditions' must be a list")
    for i, c in enumerate(filters["conditions"]):
        _check_filters(c, f"{where}.conditions[{i}]")


class RagstoreDocumentStore:
    """Haystack ``DocumentStore`` over a ragstore :class:`~ragstore.Store`.

    ``RagstoreDocumentStore(path, *, embedder=None, tokenizer=None,
    chunk_tokens=None, metric=None, readonly=False, lock_timeout=10.0,
    store=None)``

    - ``embedder``: a ragstore embedder spec ("minilm" ...) or object; None
      uses the store's own (``"minilm-int8"`` for a new store).
    - ``tokenizer``, ``chunk_tokens``, ``metric``: for a new store only
      (defaults: whitespace tokenizer, one chunk per Document, cosine).
    - ``store``: an open :class:`~ragstore.Store` to use instead of ``path``
      (not closed by :meth:`close`; not serializable by :meth:`to_dict`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        embedder: Any = None,
        tokenizer: Any = None,
        chunk_tokens: int | None = None,
        metric: str | None = None,
        readonly: bool = False,
        lock_timeout: float = 10.0,
        store: Store | None = None,
    ) -> None:
        # Haystack components may call from several threads; a Store's first writes must not race
        self._write_lock = threading.Lock()
        self._init = {"path": None if path is None else os.fspath(path), "readonly": readonly,
                      "lock_timeout": lock_timeout, "metric": metric, "chunk_tokens": chunk_tokens,
                      # an embedder object cannot be serialized: from_dict reopens with the store's recorded one
                      "embedder": embedder if isinstance(embedder, str) else None,
                      "tokenizer": tokenizer if isinstance(tokenizer, str) else None}
        if store is not None:
            self.store, self._owns_store = store, False
            return
        if path is None:
            raise InvalidInputError("RagstoreDocumentStore needs a path (or an open store=)")
        if not os.path.exists(os.path.join(os.fspath(path), "data.mdb")):
            embedder, tokenizer, chunk_tokens = new_store_layout(embedder, tokenizer, chunk_tokens)
        self.store = Store(path, embedder=embedder, tokenizer=tokenizer, chunk_tokens=chunk_tokens, metric=metric,
                           readonly=readonly, lock_timeout=lock_timeout)
        self._owns_store = True

    # ------------------------------------------------------------------ lifecycle, serialization
    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> RagstoreDocumentStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def to_dict(self) -> dict[str, Any]:
        """Haystack's serialization: the path and the options given. An embedder given as an
        object is left out (None): ``from_dict`` reopens the store with the embedder it records,
        resolved by name (enough to read and filter; writes and searches need that name to resolve)."""
        if self._init["path"] is None:
            raise InvalidInputError("a RagstoreDocumentStore made from an open store= cannot be serialized")
        return default_to_dict(self, **self._init)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RagstoreDocumentStore:
        return default_from_dict(cls, data)

    # ------------------------------------------------------------------ mapping
    @staticmethod
    def _to_ragstore(doc: Document) -> tuple[str, dict[str, Any]]:
        meta = dict(doc.meta or {})
        if HAYSTACK_KEY in meta:
            raise InvalidInputError(f"meta key {HAYSTACK_KEY!r} is reserved by ragstore")
        extra: dict[str, Any] = {}
        content = doc.content
        if content is None or not content.strip():
            text = EMPTY_TEXT
            extra["content"] = content  # None (blob only) or the blank text itself
        else:
            text = content
        if doc.embedding is not None:
            extra["embedding"] = [float(x) for x in doc.embedding]
        if doc.blob is not None:
            extra["blob"] = {"data": bytes(doc.blob.data), "meta": doc.blob.meta, "mime_type": doc.blob.mime_type}
        if doc.sparse_embedding is not None:
            extra["sparse_embedding"] = doc.sparse_embedding.to_dict()
        if doc.score is not None:
            extra["score"] = float(doc.score)
        if extra:
            meta[HAYSTACK_KEY] = extra
        return text, meta

    def _document(self, doc_id: str, *, return_embedding: bool = True) -> Document:
        d = self.store.get(doc_id)
        meta = dict(d.meta)
        extra = meta.pop(HAYSTACK_KEY, {})
        blob = extra.get("blob")
        sparse = extra.get("sparse_embedding")
        return Document(
            id=d.id,
            content=extra["content"] if "content" in extra else d.text,
            blob=None if blob is None else ByteStream(data=bytes(blob["data"]), meta=blob.get("meta") or {},
                                                      mime_type=blob.get("mime_type")),
            meta=meta,
            score=extra.get("score"),
            embedding=extra.get("embedding") if return_embedding else None,
            sparse_embedding=None if sparse is None else SparseEmbedding.from_dict(sparse),
        )

    def _documents(self) -> Iterator[Document]:
        for doc_id in self.store.doc_ids():
            yield self._document(doc_id)

    @staticmethod
    def _matches(filters: dict[str, Any] | None, doc: Document) -> bool:
        if not filters:
            return True
        try:
            return document_matches_filter(filters, doc)
        except FilterError as e:
            raise HaystackFilterError(str(e)) from None

    def _matching(self, filters: dict[str, Any] | None) -> list[Document]:
        if filters:
            _check_filters(filters)
        return [d for d in self._documents() if self._matches(filters, d)]

    # ------------------------------------------------------------------ the DocumentStore protocol
    def count_documents(self) -> int:
        return len(self.store)

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The Documents matching Haystack ``filters`` (all of them for None or {}), by id."""
        return self._matching(filters)

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Write Documents; returns how many were written.

        ``DuplicatePolicy.NONE`` means ``FAIL`` (as in Haystack's in-memory
        store): a Document whose id is stored, or repeated in ``documents``,
        raises :class:`DuplicateError` and nothing is written. ``SKIP`` leaves
        the stored one (and the first of repeats); ``OVERWRITE`` replaces it
        (the last of repeats wins)."""
        if not isinstance(documents, list | tuple) or any(not isinstance(d, Document) for d in documents):
            raise InvalidInputError("write_documents takes a list of haystack Documents")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.FAIL
        chosen: dict[str, Document] = {}
        for d in documents:
            stored = d.id in chosen or d.id in self.store
            if stored and policy == DuplicatePolicy.FAIL:
                raise DuplicateError(f"a Document with id {d.id!r} already exists (DuplicatePolicy.FAIL)")
            if stored and policy == DuplicatePolicy.SKIP:
                continue
            chosen.pop(d.id, None)  # OVERWRITE: the last one wins, in its own place
            chosen[d.id] = d
        batch = []
        for d in chosen.values():
            text, meta = self._to_ragstore(d)
            batch.append(Doc(d.id, text, meta=meta))
        with self._write_lock:
            self.store.add_many(batch, replace=True)
        return len(batch)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete these ids; missing ones are ignored."""
        with self._write_lock:
            self.store.delete_many([str(i) for i in document_ids], missing_ok=True)

    # ------------------------------------------------------------------ the extended methods
    def delete_all_documents(self, recreate_index: bool = False) -> None:
        """Delete every Document. ``recreate_index=True`` also compacts the store: the
        vector index is rebuilt empty and the freed space goes back to the disk."""
        with self._write_lock:
            self.store.delete_many(list(self.store.doc_ids()), missing_ok=True)
            if recreate_index:
                self.store.compact()

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Delete the Documents matching ``filters``; returns how many. Empty filters are
        refused (not read as "everything"): :meth:`delete_all_documents` says so."""
        if not filters:
            raise HaystackFilterError("delete_by_filter needs filters; use delete_all_documents() to delete all")
        ids = [d.id for d in self._matching(filters)]
        with self._write_lock:
            return len(self.store.delete_many(ids, missing_ok=True).doc_ids)

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the meta of the Documents matching ``filters``; returns how many."""
        if not filters:
            raise HaystackFilterError("update_by_filter needs filters (empty ones would update every Document)")
        if not isinstance(meta, dict) or HAYSTACK_KEY in meta:
            raise InvalidInputError(f"meta must be a dict without the reserved key {HAYSTACK_KEY!r}")
        docs = self._matching(filters)
        batch = []
        for d in docs:
            text, m = self._to_ragstore(replace(d, meta={**d.meta, **meta}))
            # the text is unchanged: keep its stored vector rather than embed it again
            batch.append(Doc(d.id, text, None, m, self.store.vectors(d.id)))
        with self._write_lock:
            self.store.add_many(batch, replace=True)
        return len(docs)

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        return len(self._matching(filters))

    # ------------------------------------------------------------------ async (Haystack's AsyncDocumentStore)
    # The store's calls are blocking (LMDB, usearch, the embedder): each runs in a worker thread,
    # writes one at a time under the write lock, so an event loop is never blocked.
    async def count_documents_async(self) -> int:
        return await asyncio.to_thread(self.count_documents)

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        return await asyncio.to_thread(self.filter_documents, filters)

    async def write_documents_async(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        return await asyncio.to_thread(self.write_documents, documents, policy)

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        await asyncio.to_thread(self.delete_documents, document_ids)

    async def delete_all_documents_async(self, recreate_index: bool = False) -> None:
        await asyncio.to_thread(self.delete_all_documents, recreate_index)

    async def delete_by_filter_async(self, filters: dict[str, Any]) -> int:
        return await asyncio.to_thread(self.delete_by_filter, filters)

    async def update_by_filter_async(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        return await asyncio.to_thread(self.update_by_filter, filters, meta)

    async def count_documents_by_filter_async(self, filters: dict[str, Any]) -> int:
        return await asyncio.to_thread(self.count_documents_by_filter, filters)

    async def embedding_retrieval_async(self, query_embedding: list[float], **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(lambda: self.embedding_retrieval(query_embedding, **kwargs))

    # ------------------------------------------------------------------ search
    def embedding_retrieval(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        scale_score: bool = False,
        return_embedding: bool = False,
    ) -> list[Document]:
        """The ``top_k`` Documents nearest to ``query_embedding`` (a vector of the
        store's embedder, e.g. from :class:`RagstoreTextEmbedder`), best first,
        with ``score`` set (similarity; mapped into [0, 1] with ``scale_score``)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidInputError(f"top_k must be a non-negative integer, got {top_k!r}")
        if filters:
            _check_filters(filters)
        q = np.asarray(query_embedding, dtype=np.float32)
        out: list[Document] = []
        seen: set[str] = set()
        total = len(self.store)
        fetch = top_k if not filters else max(4 * top_k, 20)
        while top_k and len(out) < top_k and len(seen) < total:
            hits = self.store.query(q, fetch, exclude_docs=seen)
            if not hits:
                break
            for h in hits:
                if h.doc_id in seen:
                    continue  # a stored Document of several chunks: its best chunk came first
                seen.add(h.doc_id)
                doc = self._document(h.doc_id, return_embedding=return_embedding)
                if not self._matches(filters, doc):
                    continue
                out.append(replace(doc, score=self._scale(h.score) if scale_score else h.score))
                if len(out) == top_k:
                    break
            fetch = min(fetch * 2, 10_000)
        return out

    def _scale(self, score: float) -> float:
        if self.store.config.metric == "l2sq":
            return float(1.0 / (1.0 + max(0.0, -score)))
        return float(min(1.0, max(0.0, (1.0 + score) / 2.0)))


@component
class RagstoreTextEmbedder:
    """Embeds a query text with the store's own embedder (the model that embedded its Documents)."""

    def __init__(self, document_store: RagstoreDocumentStore) -> None:
        self.document_store = document_store

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, document_store=self.document_store.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RagstoreTextEmbedder:
        params = data["init_parameters"]
        params["document_store"] = RagstoreDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, data)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise InvalidInputError(f"RagstoreTextEmbedder takes a str, got {type(text).__name__}")
        return {"embedding": self.document_store.store.embed([text])[0].tolist()}


@component
class RagstoreEmbeddingRetriever:
    """The ``top_k`` Documents nearest to a query embedding, optionally filtered.

    ``run(query_embedding, filters=None, top_k=None)``: the run's ``filters``
    and ``top_k`` replace the ones given here."""

    def __init__(
        self,
        document_store: RagstoreDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        scale_score: bool = False,
        return_embedding: bool = False,
    ) -> None:
        if not isinstance(document_store, RagstoreDocumentStore):
            raise InvalidInputError("document_store must be a RagstoreDocumentStore")
        if filters:
            _check_filters(filters)
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.scale_score = scale_score
        self.return_embedding = return_embedding

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, document_store=self.document_store.to_dict(), filters=self.filters,
                               top_k=self.top_k, scale_score=self.scale_score, return_embedding=self.return_embedding)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RagstoreEmbeddingRetriever:
        params = data["init_parameters"]
        params["document_store"] = RagstoreDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self, query_embedding: list[float], filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        docs = self.document_store.embedding_retrieval(
            query_embedding,
            filters=filters if filters is not None else self.filters,
            top_k=top_k if top_k is not None else self.top_k,
            scale_score=self.scale_score,
            return_embedding=self.return_embedding,
        )
        return {"documents": docs}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query_embedding: list[float], filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.run, query_embedding, filters, top_k)
