"""The actors of a sharded store: plain classes, made Ray actors by :func:`remote_class`.

- :class:`ShardWriter`: the one writer of a shard, an ordinary :class:`ragstore.Store` on disk.
- :class:`ShardReader`: a read-only :class:`ragstore.Store` of a shard (any number per shard).
- :class:`EmbedWorker`: chunks texts exactly as the shard stores do and embeds the chunks, so
  that the writers take precomputed vectors (the embedding runs in a pool of these).

An actor holds nothing the disk does not: restarted (``max_restarts``) after its process or
node died, its ``__init__`` reopens the shard store, which recovers as any store does (LMDB is
the system of record; the index replays the change log, see docs/durability.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import QueryOptions
from ..embedders.base import resolve
from ..engine.chunking import Chunker
from ..errors import InvalidInputError
from ..store import Store
from ..types import CheckReport, Hit, Stats
from .routing import Manifest

__all__ = ["ShardWriter", "ShardReader", "EmbedWorker", "remote_class", "EMBED_SLICE"]

EMBED_SLICE = 8192  # chunks embedded in one call, as Store.add_many does
_REMOTE: dict[type, Any] = {}


def remote_class(cls: type) -> Any:
    """``ray.remote(cls)``, made once per process."""
    got = _REMOTE.get(cls)
    if got is None:
        import ray

        got = _REMOTE[cls] = ray.remote(cls)
    return got


def _where() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "pid": os.getpid(), "restarted": bool(ctx.was_current_actor_reconstructed)}


class ShardWriter:
    """The writer of shard ``shard``: opens (or creates) the store at ``path``."""

    def __init__(self, path: str, shard: int, embedder: Any, store_options: dict[str, Any],
                 lock_timeout: float = 60.0) -> None:
        self.shard = shard
        # a restarted writer waits for the writer lock of a process that is still dying
        self.store = Store(path, embedder=embedder, lock_timeout=lock_timeout, **store_options)

    def where(self) -> dict[str, Any]:
        return _where()

    def layout(self) -> dict[str, Any]:
        """What the embed pool needs to cut chunks as this store does, and the store's config."""
        s = self.store
        return {"tokenizer_json": s.chunker.tokenizer_json, "chunk_tokens": s.config.chunk_tokens,
                "config": s.config.to_dict()}

    def unchanged(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """The ids of ``(doc_id, content_hash)`` pairs this shard holds with that content."""
        rec = self.store._records
        with rec.read() as txn:
            held = rec.get_docs(txn, {d for d, _ in items})
        return [d for d, h in items if d in held and held[d].content_hash == h]

    def has(self, doc_ids: Sequence[str]) -> list[str]:
        rec = self.store._records
        with rec.read() as txn:
            return list(rec.get_docs(txn, set(doc_ids)))

    def write(self, docs: list[dict[str, Any]], replace: bool = True) -> dict[str, int]:
        """``add_many`` of documents (with vectors or not), one shard's part of a batch."""
        s = self.store.add_many(docs, replace=replace)
        return {"added": s.added, "replaced": s.replaced, "unchanged": s.unchanged, "chunks": s.chunks}

    def delete(self, doc_ids: list[str], missing_ok: bool) -> tuple[int, tuple[str, ...]]:
        d = self.store.delete_many(doc_ids, missing_ok=missing_ok)
        return int(d), d.doc_ids

    def count(self) -> int:
        return len(self.store)

    def stats(self) -> Stats:
        return self.store.stats()

    def check(self, fix: bool, manifest: Manifest, shard: int) -> tuple[CheckReport, list[str]]:
        return check_shard(self.store, fix, manifest, shard)

    def checkpoint(self) -> None:
        self.store.checkpoint()

    def close(self) -> None:
        self.store.close()


class ShardReader:
    """A read-only store of one shard: it sees the writer's commits at its next query."""

    def __init__(self, path: str, shard: int) -> None:
        self.shard = shard
        self.store = Store(path, readonly=True, create=False)

    def where(self) -> dict[str, Any]:
        return _where()

    def query_many(self, queries: Any, options: QueryOptions, hold: float = 0.0) -> list[list[Hit]]:
        if hold:
            time.sleep(hold)  # (the fault tests: a query in flight when its actor is killed)
        return self.store.query_many(queries, options=options)

    def get_chunk(self, chunk_id: int) -> Hit:
        return self.store.get_chunk(chunk_id)

    def get(self, doc_id: str) -> Any:
        return self.store.get(doc_id)

    def doc_ids(self, source: str | None = None) -> list[str]:
        return list(self.store.doc_ids(source=source))

    def sources(self) -> dict[str, int]:
        return self.store.sources()

    def count(self) -> int:
        return len(self.store)

    def stats(self) -> Stats:
        return self.store.stats()

    def check(self, manifest: Manifest, shard: int) -> tuple[CheckReport, list[str]]:
        return check_shard(self.store, False, manifest, shard)

    def close(self) -> None:
        self.store.close()


def check_shard(store: Store, fix: bool, manifest: Manifest, shard: int) -> tuple[CheckReport, list[str]]:
    """The store's own check, and the ids this shard holds that route to another one."""
    report = store.check(fix=fix)
    misplaced = []
    rec = store._records
    with rec.read() as txn:
        for doc_id, doc in rec.iter_docs(txn):
            if manifest.shard(doc_id, doc.source or None) != shard:
                misplaced.append(doc_id)
    return report, misplaced


class EmbedWorker:
    """Cuts texts into the shard stores' chunks and embeds them with the same embedder."""

    def __init__(self, embedder: Any, tokenizer_json: str, chunk_tokens: int) -> None:
        self.embedder = resolve(embedder)
        self.chunker = Chunker(tokenizer_json, chunk_tokens)

    def where(self) -> dict[str, Any]:
        return _where()

    def embed(self, texts: list[str]) -> list[np.ndarray | InvalidInputError]:
        """One (n_chunks, dim) float32 array per text, as ``Store.chunk(text)`` cuts it (or its error)."""
        cut = self.chunker.chunk_each(texts)
        chunk_texts = [c.text for d in cut if not isinstance(d, InvalidInputError) for c in d.chunks]
        if chunk_texts:
            vecs = np.concatenate([np.asarray(self.embedder.encode(chunk_texts[i: i + EMBED_SLICE]), np.float32)
                                   for i in range(0, len(chunk_texts), EMBED_SLICE)])
        else:
            vecs = np.zeros((0, int(self.embedder.dim)), np.float32)
        out: list[np.ndarray | InvalidInputError] = []
        at = 0
        for d in cut:
            if isinstance(d, InvalidInputError):
                out.append(d)
                continue
            n = len(d.chunks)
            out.append(vecs[at: at + n])
            at += n
        return out
