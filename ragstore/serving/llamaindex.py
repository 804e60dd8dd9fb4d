"""A LlamaIndex vector store backed by a ragstore store, and an embedding wrapper.

``pip install 'ragstore[llamaindex]'`` (llama-index-core)::

    from llama_index.core import StorageContext, VectorStoreIndex
    from ragstore.serving.llamaindex import RagstoreEmbedding, RagstoreVectorStore

    vs = RagstoreVectorStore("my.store")                 # embedder: the store's ("minilm-int8" when new)
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=vs),
        embed_model=RagstoreEmbedding(vs.store))         # the store's own model, for nodes and queries
    index.as_retriever(similarity_top_k=3).retrieve("question")

How LlamaIndex's model maps onto ragstore's (docs/integrations.md says why):

- A LlamaIndex node is already a chunk (a node parser made it): each becomes
  one ragstore document, stored as **one chunk** in a store this class creates
  (``chunk_tokens = 2**20``, a whitespace tokenizer; with an embedder that reads
  a bounded number of tokens, such as MiniLM, the store's own chunking). The node id is the
  ragstore document id, its text the document's text (``stores_text=True``:
  the index needs no separate docstore to answer).
- ``metadata`` is the document's meta, so filters see it as given; the rest of
  the node (type, relationships, ``ref_doc_id``, templates) is kept, as
  LlamaIndex's own stores keep it, in the reserved meta key
  ``"__llamaindex__"``, and the node comes back whole.
- **Vectors**: the node's ``embedding`` is stored as the chunk's vector (the
  index embeds nodes and queries with one ``embed_model``, so they are
  comparable); it must have the store's dimension. A node without one is
  embedded by the store's embedder. :class:`RagstoreEmbedding` makes the
  store's embedder LlamaIndex's ``embed_model``, so both agree.
- **Filters** (``MetadataFilters``: every operator, AND/OR/NOT, nested) are
  evaluated here by LlamaIndex's own evaluator (the one ``SimpleVectorStore``
  uses) over each candidate's metadata; a filtered query widens until
  ``similarity_top_k`` nodes pass. ``delete(ref_doc_id)`` reads every stored
  node's ``ref_doc_id``. Filters inside the engine are planned.
- Nodes with blank text are stored as ``"(empty)"`` and come back with their
  own (blank) text.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
    from llama_index.core.schema import BaseNode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import (
        build_metadata_filter_fn,
        metadata_dict_to_node,
        node_to_metadata_dict,
    )
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"ragstore's LlamaIndex adapter needs the 'llamaindex' extra ({e.name} is missing): "
        "pip install 'ragstore[llamaindex]'"
    ) from e

import numpy as np

from .. import Store
from ..errors import InvalidInputError
from ..types import Doc
from ._doors import EMPTY_TEXT, new_store_layout

__all__ = ["RagstoreVectorStore", "RagstoreEmbedding", "LLAMAINDEX_KEY"]

LLAMAINDEX_KEY = "__llamaindex__"


def _identity(x: Any) -> Any:
    return x


class RagstoreEmbedding(BaseEmbedding):
    """A LlamaIndex ``embed_model`` over a ragstore embedder, or an open store's.

    ``RagstoreEmbedding(store_or_embedder)``: a :class:`~ragstore.Store` (its
    ``embed``, normalized as the store's vectors are) or any ragstore embedder
    object (``HashEmbedder``, ``resolve("minilm")`` ...: its ``encode``)."""

    _encode: Callable[[list[str]], np.ndarray] = PrivateAttr()

    def __init__(self, store_or_embedder: Any, **kwargs: Any) -> None:
        if isinstance(store_or_embedder, Store):
            encode = store_or_embedder.embed
            name = store_or_embedder.config.embedder
        elif callable(getattr(store_or_embedder, "encode", None)):
            encode = store_or_embedder.encode
            name = getattr(store_or_embedder, "name", type(store_or_embedder).__name__)
        else:
            raise InvalidInputError("RagstoreEmbedding takes a ragstore Store or embedder (an object with encode())")
        kwargs.setdefault("model_name", f"ragstore:{name}")
        super().__init__(**kwargs)
        self._encode = encode

    @classmethod
    def class_name(cls) -> str:
        return "RagstoreEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embeddings([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self._encode(list(texts)), dtype=np.float32).tolist()


class RagstoreVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store over a ragstore :class:`~ragstore.Store`.

    ``RagstoreVectorStore(path=None, *, store=None, embedder=None,
    tokenizer=None, chunk_tokens=None, metric=None, readonly=False,
    lock_timeout=10.0)``

    - ``embedder``: a ragstore embedder spec or object (None: the store's own;
      ``ragstore.embedders.Precomputed(dim)`` for vectors from another model,
      given on every node and query).
    - ``tokenizer``, ``chunk_tokens``, ``metric``: for a new store only
      (defaults: whitespace tokenizer, one chunk per node, cosine).
    - ``store``: an open :class:`~ragstore.Store` instead of ``path`` (not
      closed by :meth:`close`).
    """

    stores_text: bool = True
    flat_metadata: bool = False

    _store: Store = PrivateAttr()
    _owns_store: bool = PrivateAttr(default=False)
    # LlamaIndex may call from threads (async_add runs add); a Store's first writes must not race
    _write_lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: Store | None = None,
        embedder: Any = None,
        tokenizer: Any = None,
        chunk_tokens: int | None = None,
        metric: str | None = None,
        readonly: bool = False,
        lock_timeout: float = 10.0,
    ) -> None:
        super().__init__(stores_text=True)
        if store is not None:
            self._store, self._owns_store = store, False
            return
        if path is None:
            raise InvalidInputError("RagstoreVectorStore needs a path (or an open store=)")
        if not os.path.exists(os.path.join(os.fspath(path), "data.mdb")):
            embedder, tokenizer, chunk_tokens = new_store_layout(embedder, tokenizer, chunk_tokens)
        self._store = Store(path, embedder=embedder, tokenizer=tokenizer, chunk_tokens=chunk_tokens, metric=metric,
                            readonly=readonly, lock_timeout=lock_timeout)
        self._owns_store = True

    @classmethod
    def class_name(cls) -> str:
        return "RagstoreVectorStore"

    @property
    def client(self) -> Store:
        """The ragstore :class:`~ragstore.Store`."""
        return self._store

    @property
    def store(self) -> Store:
        return self._store

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> RagstoreVectorStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ mapping
    def _to_doc(self, node: BaseNode) -> Doc:
        meta = dict(node.metadata or {})
        if LLAMAINDEX_KEY in meta:
            raise InvalidInputError(f"metadata key {LLAMAINDEX_KEY!r} is reserved by ragstore")
        text = node.get_content()  # the node's own text, without metadata (MetadataMode.NONE)
        packed = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
        extra: dict[str, Any] = {"node": packed["_node_content"], "type": packed["_node_type"],
                                 "ref_doc_id": node.ref_doc_id}
        if not text.strip():
            extra["text"], text = text, EMPTY_TEXT
        meta[LLAMAINDEX_KEY] = extra
        emb = node.embedding
        vectors = None if emb is None else np.asarray(emb, dtype=np.float32)[None, :]
        if vectors is not None and len(self._store.chunk(text)) != 1:
            vectors = None  # an existing store with smaller chunks: the store embeds each chunk itself
        return Doc(node.node_id, text, meta=meta, vectors=vectors)

    def _node(self, doc_id: str) -> tuple[BaseNode, dict[str, Any]]:
        d = self._store.get(doc_id)
        meta = dict(d.meta)
        extra = meta.pop(LLAMAINDEX_KEY, {})
        text = extra.get("text", d.text)
        if "node" not in extra:  # written by another client: a plain text node
            from llama_index.core.schema import TextNode

            return TextNode(id_=d.id, text=text, metadata=meta), meta
        node = metadata_dict_to_node({"_node_content": extra["node"], "_node_type": extra.get("type")}, text=text)
        return node, {**meta, "ref_doc_id": extra.get("ref_doc_id"), "doc_id": extra.get("ref_doc_id"),
                      "document_id": extra.get("ref_doc_id")}

    @staticmethod
    def _filter_fn(filters: MetadataFilters | None) -> Callable[[Mapping[str, Any]], bool]:
        """A predicate on a node's metadata: LlamaIndex's own evaluator (SimpleVectorStore's)
        for each MetadataFilter, combined here, since that evaluator refuses nested MetadataFilters."""
        if filters is None or not filters.filters:
            return lambda meta: True
        parts: list[Callable[[Mapping[str, Any]], bool]] = []
        for f in filters.filters:
            if isinstance(f, MetadataFilters):
                parts.append(RagstoreVectorStore._filter_fn(f))
            else:
                # its predicate takes a key for a lookup function; with the identity as the lookup,
                # the key is the metadata itself (typed str there, hence the casts)
                fn = build_metadata_filter_fn(cast(Callable[[str], Mapping[str, Any]], _identity),
                                              MetadataFilters(filters=[f]))
                parts.append(cast(Callable[[Mapping[str, Any]], bool], fn))
        cond = filters.condition or FilterCondition.AND
        if cond == FilterCondition.AND:
            return lambda meta: all(p(meta) for p in parts)
        if cond == FilterCondition.OR:
            return lambda meta: any(p(meta) for p in parts)
        if cond == FilterCondition.NOT:
            return lambda meta: not any(p(meta) for p in parts)  # none of them matches, as LlamaIndex reads NOT
        raise InvalidInputError(f"unknown filter condition {cond!r}")

    # ------------------------------------------------------------------ writes
    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Add (or replace, by node id) nodes; returns their ids."""
        batch = [self._to_doc(n) for n in nodes]
        if batch:
            with self._write_lock:
                self._store.add_many(batch, replace=True)
        return [d.id for d in batch]

    def _delete_where(self, pred: Callable[[str, BaseNode, dict[str, Any]], bool]) -> int:
        ids = []
        for doc_id in self._store.doc_ids():
            node, meta = self._node(doc_id)
            if pred(doc_id, node, meta):
                ids.append(doc_id)
        with self._write_lock:
            return len(self._store.delete_many(ids, missing_ok=True).doc_ids)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the nodes of the source document ``ref_doc_id`` (a pass over every node)."""
        self._delete_where(lambda _i, node, _m: node.ref_doc_id == ref_doc_id)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete the nodes among ``node_ids`` (all if None) that match ``filters``."""
        keep = None if node_ids is None else set(node_ids)
        fn = self._filter_fn(filters)
        self._delete_where(lambda i, _n, meta: (keep is None or i in keep) and fn(meta))

    def clear(self) -> None:
        with self._write_lock:
            self._store.delete_many(list(self._store.doc_ids()), missing_ok=True)

    # ------------------------------------------------------------------ reads
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Stored nodes by id (missing ones skipped), or all of them, that match ``filters``."""
        fn = self._filter_fn(filters)
        ids = list(self._store.doc_ids()) if node_ids is None else [i for i in node_ids if i in self._store]
        out = []
        for i in ids:
            node, meta = self._node(i)
            if fn(meta):
                out.append(node)
        return out

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nearest nodes (DEFAULT or MMR mode), filtered by
        ``filters``, ``node_ids`` and ``doc_ids`` (ref doc ids); similarities are cosine
        (higher is better), as in ``SimpleVectorStore``. Empty ``node_ids`` or ``doc_ids``
        lists restrict nothing."""
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise InvalidInputError(f"query mode {query.mode!r} is not supported (DEFAULT and MMR are)")
        if query.query_embedding is None:
            raise InvalidInputError("the query has no query_embedding (LlamaIndex's index embeds the query text)")
        k = query.similarity_top_k
        mmr = query.mode == VectorStoreQueryMode.MMR
        want = max(k, int(kwargs.get("mmr_prefetch_k") or 4 * k)) if mmr else k
        fn = self._filter_fn(query.filters)
        # an empty list restricts nothing: VectorStoreIndex.as_retriever() passes node_ids=[] to stores
        # that keep the text (its own node table stays empty), as the other text-storing stores read it
        node_ids = set(query.node_ids) if query.node_ids else None
        doc_ids = set(query.doc_ids) if query.doc_ids else None
        narrowed = query.filters is not None or node_ids is not None or doc_ids is not None
        q = np.asarray(query.query_embedding, dtype=np.float32)
        found: list[tuple[BaseNode, float]] = []
        seen: set[str] = set()
        total = len(self._store)
        fetch = max(4 * want, 20) if narrowed else want
        while want > 0 and len(found) < want and len(seen) < total:
            hits = self._store.query(q, fetch, exclude_docs=seen)
            if not hits:
                break
            for h in hits:
                if h.doc_id in seen:
                    continue  # a node stored as several chunks: its best chunk came first
                seen.add(h.doc_id)
                if node_ids is not None and h.doc_id not in node_ids:
                    continue
                node, meta = self._node(h.doc_id)
                if (doc_ids is not None and node.ref_doc_id not in doc_ids) or not fn(meta):
                    continue
                found.append((node, h.score))
                if len(found) == want:
                    break
            fetch = min(fetch * 2, 10_000)
        if mmr and found:
            vecs = [self._store.vectors(n.node_id)[0].tolist() for n, _ in found]
            sims, ids = get_top_k_mmr_embeddings(
                q.tolist(), vecs, similarity_top_k=k, embedding_ids=[n.node_id for n, _ in found],
                mmr_threshold=query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold"),
            )
            by_id = {n.node_id: n for n, _ in found}
            found = [(by_id[i], s) for i, s in zip(ids, sims, strict=True)]
        return VectorStoreQueryResult(nodes=[n for n, _ in found], similarities=[float(s) for _, s in found],
                                      ids=[n.node_id for n, _ in found])

    # ------------------------------------------------------------------ async
    # The store's calls block (LMDB, usearch, the embedder): the async methods run the sync ones
    # in worker threads (writes one at a time under the write lock), so an event loop is never blocked.
    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
