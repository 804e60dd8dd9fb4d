"""AsyncStore: the store for async applications (FastAPI, LangChain's and LlamaIndex's async paths).

Every call runs the blocking :class:`~ragstore.Store` method in a worker
thread (:func:`asyncio.to_thread`), so the event loop keeps serving other
tasks while a query embeds its text or a write commits. The store's own mutex
still serializes its calls; many readers at once belong in several processes
(see docs/server.md).

    async with await AsyncStore.open("my-store") as st:
        hits = await st.query("who wrote it?", k=5)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .store import Store
from .types import (
    AddResult,
    BackupResult,
    Deleted,
    Document,
    DocumentInfo,
    DocumentPage,
    Exported,
    Hit,
    IngestSummary,
    Stats,
    StoredChunk,
)

__all__ = ["AsyncStore"]


class AsyncStore:
    """Async methods over an open :class:`Store` (``.store``), each run in a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    async def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> AsyncStore:
        """Open (or create) the store at ``path``, in a thread; ``kwargs`` as for :class:`Store`."""
        return cls(await asyncio.to_thread(Store, path, **kwargs))

    async def query(self, query: Any, *args: Any, **kwargs: Any) -> list[Hit]:
        return await asyncio.to_thread(self.store.query, query, *args, **kwargs)

    async def query_many(self, queries: Any, *args: Any, **kwargs: Any) -> list[list[Hit]]:
        return await asyncio.to_thread(self.store.query_many, queries, *args, **kwargs)

    async def add(self, doc_id: str, text: str, **kwargs: Any) -> AddResult:
        return await asyncio.to_thread(self.store.add, doc_id, text, **kwargs)

    async def add_many(self, docs: Iterable[Any], **kwargs: Any) -> IngestSummary:
        return await asyncio.to_thread(self.store.add_many, docs, **kwargs)

    async def delete(self, doc_id: str) -> int:
        return await asyncio.to_thread(self.store.delete, doc_id)

    async def delete_many(self, doc_ids: Iterable[str], **kwargs: Any) -> Deleted:
        return await asyncio.to_thread(self.store.delete_many, doc_ids, **kwargs)

    async def get(self, doc_id: str) -> Document:
        return await asyncio.to_thread(self.store.get, doc_id)

    async def list_documents(self, **kwargs: Any) -> DocumentPage:
        return await asyncio.to_thread(self.store.list_documents, **kwargs)

    async def chunks(self, doc_id: str, *, vectors: bool = False) -> list[StoredChunk]:
        """A document's chunks (a list: one thread call reads them all)."""
        return await asyncio.to_thread(lambda: list(self.store.iter_chunks(doc_id, vectors=vectors)))

    async def update_meta(self, doc_id: str, meta: Mapping[str, Any], **kwargs: Any) -> DocumentInfo:
        return await asyncio.to_thread(self.store.update_meta, doc_id, meta, **kwargs)

    async def embed(self, texts: Sequence[str]) -> Any:
        return await asyncio.to_thread(self.store.embed, texts)

    async def stats(self) -> Stats:
        return await asyncio.to_thread(self.store.stats)

    async def export_jsonl(self, path: str | os.PathLike[str], **kwargs: Any) -> Exported:
        return await asyncio.to_thread(self.store.export_jsonl, path, **kwargs)

    async def import_jsonl(self, path: str | os.PathLike[str], **kwargs: Any) -> IngestSummary:
        return await asyncio.to_thread(self.store.import_jsonl, path, **kwargs)

    async def backup(self, dest: str | os.PathLike[str]) -> BackupResult:
        return await asyncio.to_thread(self.store.backup, dest)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncStore({self.store!r})"
