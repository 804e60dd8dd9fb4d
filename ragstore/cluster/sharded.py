"""ShardedStore: one store's API over the shard stores of a cluster root, on Ray actors.

Reads go to :class:`~.actors.ShardReader` actors (``replicas`` per shard), writes to one
:class:`~.actors.ShardWriter` per shard (started at the first write). A query is embedded once
here, sent to every shard (or, routed by source, only to the shards of the sources asked for)
and the shards' exact top k are merged (:mod:`.merge`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import QueryOptions
from ..embedders.base import resolve
from ..engine.chunking import check_text
from ..engine.hybrid import query_texts
from ..engine.inputs import check_doc_id, coerce_doc
from ..engine.search import Plan
from ..errors import AlreadyExistsError, InvalidInputError, NotFoundError, StoreClosedError
from ..types import AddResult, CheckReport, Deleted, Document, Hit, IngestSummary, Stats
from .actors import ShardReader, ShardWriter, remote_class
from .errors import PartialResultWarning
from .merge import fuse_rrf, globalize, merge_topk
from .routing import Manifest, local_chunk_id, open_manifest, shard_of, shard_path
from .runtime import actor_options, check_on_error, connect, gather, kill_all, shard_error

__all__ = ["ShardedStore", "ClusterStats", "ClusterCheck"]

_FROM_OPTIONS: Any = object()
PUT_BYTES = 1 << 20  # query matrices larger than this go to the shards through one ray.put


@dataclass(frozen=True)
class ClusterStats:
    """Totals over the shards, and each shard's :class:`ragstore.Stats`."""

    documents: int
    chunks: int
    tokens: int
    sources: dict[str, int]
    bytes_on_disk: int
    index_vectors: int
    unindexed: int
    shards: list[Stats] = field(default_factory=list)


@dataclass(frozen=True)
class ClusterCheck:
    """``ok`` when every shard's check passed and every document is in the shard it routes to."""

    ok: bool
    problems: list[str]
    documents: int
    chunks: int
    shards: list[CheckReport] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


class ShardedStore:
    """The sharded store at ``root`` (made by :func:`ragstore.cluster.build`).

    - ``embedder``: embeds query texts (and the documents ``add`` writes); None resolves the
      name the shards recorded (a spec string such as "minilm"); pass the object for others.
    - ``replicas``: reader actors per shard (queries are spread over them round robin).
    - ``on_shard_error``: what a query does when a shard's actor died: "retry" (the default:
      ask a replica or the restarted actor again, for up to ``retry_timeout`` seconds), "raise"
      (:class:`ShardError` at once, naming the shard, with the other shards' merged hits in
      ``.hits``), "partial" (return the other shards' hits, with a
      :class:`PartialResultWarning`). Each query call may override it.
    - ``address``: the Ray cluster to join (None: the one ``ray.init()`` finds or starts).
    - ``actor_options``: Ray options for the shard actors (e.g. ``{"resources": {...}}``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        embedder: Any = None,
        replicas: int = 1,
        on_shard_error: str = "retry",
        retry_timeout: float = 120.0,
        address: str | None = None,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        self._closed = True
        self.root = os.path.abspath(os.fspath(root))
        self.manifest: Manifest = open_manifest(self.root)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise InvalidInputError(f"replicas must be a positive integer, got {replicas!r}")
        self.on_shard_error = check_on_error(on_shard_error)
        self.retry_timeout = float(retry_timeout)
        self._ray = connect(address)
        self.shards = self.manifest.shards
        self._given_embedder = embedder
        self._embedder: Any = None
        self._options = actor_options
        self.retried = 0  # shard calls made again after an actor died
        self._hold = 0.0  # seconds each reader sleeps before answering (the fault tests)
        reader = remote_class(ShardReader).options(**actor_options_for(actor_options))
        self._readers = [[reader.remote(shard_path(self.root, s), s) for _ in range(replicas)]
                         for s in range(self.shards)]
        self._turn = [0] * self.shards
        self._writers: list[Any] | None = None
        self._closed = False

    # ------------------------------------------------------------------ actors
    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"sharded store {self.root} is closed; open it again with ragstore.cluster.open()")

    def _reader(self, shard: int, attempt: int = 0) -> Any:
        group = self._readers[shard]
        self._turn[shard] = (self._turn[shard] + 1) % len(group)
        return group[(self._turn[shard] + attempt) % len(group)]

    def writers(self) -> list[Any]:
        """The writer actors, one per shard (started on first use)."""
        self._check_open()
        if self._writers is None:
            w = remote_class(ShardWriter).options(**actor_options_for(self._options))
            self._writers = [w.remote(shard_path(self.root, s), s, self._given_embedder, {})
                             for s in range(self.shards)]
        return self._writers

    def where(self) -> dict[str, list[dict[str, Any]]]:
        """Which node and process each reader (and writer) runs in, and whether it was restarted."""
        ray = self._ray
        out = {"readers": [ray.get(r.where.remote()) for group in self._readers for r in group]}
        if self._writers is not None:
            out["writers"] = [ray.get(w.where.remote()) for w in self._writers]
        return out

    def _fan(self, shards: Iterable[int], method: str, *args: Any,
             mode: str | None = None) -> tuple[dict[int, Any], dict[int, BaseException]]:
        mode = check_on_error(mode or self.on_shard_error)

        def call(s: int) -> Any:
            return lambda attempt: getattr(self._reader(s, attempt), method).remote(*args)

        def counted(_s: int) -> None:
            self.retried += 1

        return gather({s: call(s) for s in shards}, mode=mode, timeout=self.retry_timeout, on_retry=counted)

    def _fan_all(self, method: str, *args: Any, what: str) -> list[Any]:
        """Every shard's answer, or ShardError (maintenance calls are never partial)."""
        mode = "raise" if self.on_shard_error == "raise" else "retry"
        results, failed = self._fan(range(self.shards), method, *args, mode=mode)
        if failed:
            raise shard_error(failed, what, mode, self.retry_timeout)
        return [results[s] for s in range(self.shards)]

    def _write(self, calls: dict[int, Any], what: str) -> dict[int, Any]:
        ray = self._ray
        from ray.exceptions import RayActorError

        out, failed = {}, {}
        for s, ref in calls.items():
            try:
                out[s] = ray.get(ref)
            except RayActorError as e:
                failed[s] = e
        if failed:
            raise shard_error(failed, what + " (writes are not retried: the shard store keeps every write "
                              "acknowledged before; call again, with replace=True a call is idempotent)",
                              "raise", 0)
        return out

    # ------------------------------------------------------------------ queries
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = resolve(self._given_embedder if self._given_embedder is not None
                                     else self.manifest.embedder)
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors as the shard stores make them (their checks run there)."""
        texts = [check_text(t, "query text") for t in texts]
        return np.asarray(self.embedder.encode(texts), dtype=np.float32)

    def _matrix(self, queries: Any) -> np.ndarray:
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, np.ndarray):
            return np.asarray(queries, dtype=np.float32)
        queries = list(queries)
        if queries and all(isinstance(q, str) for q in queries):
            return self.embed(queries)
        if any(isinstance(q, str) for q in queries):
            raise InvalidInputError("queries must be all texts or all vectors, not a mix")
        if not queries:
            return np.zeros((0, 1), np.float32)
        return np.stack([np.asarray(q, dtype=np.float32) for q in queries])

    def query(self, query: Any, k: int = _FROM_OPTIONS, *, options: QueryOptions | None = None,
              **opts: Any) -> list[Hit]:
        """As :meth:`ragstore.Store.query`, over every shard (plus ``on_shard_error``)."""
        if not isinstance(query, str):
            q = np.asarray(query)
            if q.ndim != 1:
                raise InvalidInputError(f"query vector must be 1-D, got shape {q.shape}; use query_many for several")
            query = q[None, :]
        else:
            query = [query]
        return self.query_many(query, k, options=options, **opts)[0]

    def query_many(self, queries: Any, k: int = _FROM_OPTIONS, *, options: QueryOptions | None = None,
                   on_shard_error: str | None = None, **opts: Any) -> list[list[Hit]]:
        """As :meth:`ragstore.Store.query_many`: the global top k of every query, exact scores merged.

        ``mode`` "dense" and "lexical" merge the shards' top k; "hybrid" fuses (RRF) the merged
        dense and lexical top ``fusion_depth``, as one store does. Lexical scores are each
        shard's BM25, whose statistics (N, average length, document frequencies) are the shard's.
        """
        self._check_open()
        merged = (options or QueryOptions()).merged(**opts)
        if k is not _FROM_OPTIONS:
            merged = merged.replace(k=k)
        merged.validate()
        mode = check_on_error(on_shard_error or self.on_shard_error)
        n = len(queries) if not isinstance(queries, str) else 1
        plan = Plan(merged, "f32", n)  # validates sources and exclusions
        merged = merged.replace(exclude_docs=[sorted(x) for x in plan.excluded] if n else None,
                                sources=plan.shards)
        shards = range(self.shards)
        if self.manifest.route == "source" and plan.shards is not None:
            shards = sorted({shard_of(s, self.shards) for s in plan.shards})  # type: ignore[assignment]
        if n == 0:
            return []
        if merged.mode == "dense":
            return self._ask(shards, self._matrix(queries), merged, mode, n)
        texts = query_texts(queries, merged.mode)
        if merged.mode == "lexical":
            return self._ask(shards, texts, merged, mode, n)
        depth = merged.fusion_depth or max(50, 4 * merged.k)
        dense = self._ask(shards, self.embed(texts), merged.replace(mode="dense", k=depth), mode, n)
        lexical = self._ask(shards, texts, merged.replace(mode="lexical", k=depth), mode, n)
        return [fuse_rrf(d, lx, merged.k) for d, lx in zip(dense, lexical, strict=True)]

    def _ask(self, shards: Iterable[int], queries: Any, options: QueryOptions, mode: str, n: int) -> list[list[Hit]]:
        big = isinstance(queries, np.ndarray) and queries.nbytes > PUT_BYTES
        if big:  # one copy in the object store, not one per shard (a put costs ~1 ms: not for small batches)
            queries = self._ray.put(queries)
        results, failed = self._fan(shards, "query_many", queries, options, self._hold, mode=mode)
        per_shard = {s: [globalize(hits, s, self.shards) for hits in res] for s, res in results.items()}
        merged = [merge_topk([per_shard[s][i] for s in per_shard], options.k) for i in range(n)]
        if failed:
            if mode == "partial":
                warnings.warn(PartialResultWarning(
                    f"query answered without shard(s) {', '.join(map(str, sorted(failed)))} of {self.root}: "
                    "their actors died and on_shard_error='partial'"), stacklevel=3)
                return merged
            raise shard_error(failed, f"query of {self.root}", mode, self.retry_timeout, hits=merged)
        return merged

    # ------------------------------------------------------------------ reads
    def _shard_of(self, doc_id: str, source: str | None = None) -> int | None:
        """The shard of a document, or None when routing by source (it must be looked for)."""
        return self.manifest.shard(doc_id, source) if self.manifest.route == "id" else None

    def _find(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """Which shard holds each of ``doc_ids`` (those held anywhere)."""
        where: dict[str, int] = {}
        if self.manifest.route == "id":
            groups: dict[int, list[str]] = {}
            for d in doc_ids:
                groups.setdefault(self.manifest.shard(d), []).append(d)
            calls = {s: self.writers()[s].has.remote(ids) for s, ids in groups.items()}
        else:
            calls = {s: self.writers()[s].has.remote(list(doc_ids)) for s in range(self.shards)}
        for s, held in self._write(calls, "looking up documents").items():
            for d in held:
                where[d] = s
        return where

    def get(self, doc_id: str) -> Document:
        self._check_open()
        doc_id = check_doc_id(doc_id)
        s = self._shard_of(doc_id)
        if s is None:
            s = self._find([doc_id]).get(doc_id)
            if s is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.root}")
        return self._ray.get(self._reader(s).get.remote(doc_id))

    def get_chunk(self, chunk_id: int) -> Hit:
        """One chunk by its cluster chunk id (a hit's ``chunk_id``), with its continuation."""
        self._check_open()
        s, local = local_chunk_id(int(chunk_id), self.shards)
        return globalize([self._ray.get(self._reader(s).get_chunk.remote(local))], s, self.shards)[0]

    def __len__(self) -> int:
        return sum(self._fan_all("count", what="counting documents"))

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and bool(doc_id) and doc_id in self._find([doc_id])

    def doc_ids(self, *, source: str | None = None) -> Iterator[str]:
        """Document ids, shard by shard (each shard's in byte order)."""
        for ids in self._fan_all("doc_ids", source, what="listing documents"):
            yield from ids

    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self._fan_all("sources", what="listing sources"):
            for name, n in part.items():
                out[name] = out.get(name, 0) + n
        return out

    # ------------------------------------------------------------------ writes
    def add(self, doc_id: str, text: str, *, source: str | None = None, meta: Mapping[str, Any] | None = None,
            vectors: Any = None, replace: bool = False) -> AddResult:
        """Add one document to its shard (embedded by that shard's writer); durable when this returns."""
        doc = {"id": doc_id, "text": text, "source": source, "meta": meta, "vectors": vectors}
        summary = self.add_many([doc], replace=replace)
        status = "added" if summary.added else "replaced" if summary.replaced else "unchanged"
        return AddResult(doc_id, status, summary.chunks)

    def update(self, doc_id: str, text: str, **kwargs: Any) -> AddResult:
        if doc_id not in self:
            raise NotFoundError(f"no document {doc_id!r} in {self.root}; use add() to create it")
        return self.add(doc_id, text, replace=True, **kwargs)

    def add_many(self, docs: Iterable[Any], *, replace: bool = False, batch_size: int = 256) -> IngestSummary:
        """Add documents, each to its shard: the shards write (and embed) in parallel.

        Routed by source, a document that another shard holds (its source changed) is moved:
        written to its new shard, then deleted from the old one.
        """
        self._check_open()
        t0 = time.perf_counter()
        groups: dict[int, list[dict[str, Any]]] = {}
        ids: list[str] = []
        for i, raw in enumerate(docs):
            d = coerce_doc(raw, i)
            doc_id = check_doc_id(d.id)
            ids.append(doc_id)
            groups.setdefault(self.manifest.shard(doc_id, d.source), []).append(
                {"id": doc_id, "text": d.text, "source": d.source, "meta": d.meta, "vectors": d.vectors})
        moved: dict[int, list[str]] = {}
        if self.manifest.route == "source":
            target = {doc["id"]: s for s, g in groups.items() for doc in g}
            for doc_id, s in self._find(ids).items():
                if s != target[doc_id]:
                    if not replace:
                        raise AlreadyExistsError(f"document {doc_id!r} already exists in shard {s} of {self.root}; "
                                                 "pass replace=True to overwrite it")
                    moved.setdefault(s, []).append(doc_id)
        w = self.writers()
        done = self._write({s: w[s].write.remote(g, replace) for s, g in groups.items()}, f"adding to {self.root}")
        if moved:
            self._write({s: w[s].delete.remote(d, True) for s, d in moved.items()}, "moving documents")
        tot = {key: sum(r[key] for r in done.values()) for key in ("added", "replaced", "unchanged", "chunks")}
        return IngestSummary(documents=len(ids), added=tot["added"], replaced=tot["replaced"],
                             unchanged=tot["unchanged"], chunks=tot["chunks"], tokens=0,
                             seconds=time.perf_counter() - t0)

    def delete(self, doc_id: str) -> int:
        return self.delete_many([doc_id])

    def delete_many(self, doc_ids: Iterable[str], *, missing_ok: bool = False) -> Deleted:
        """Delete documents from their shards; a missing id raises (nothing deleted) unless ``missing_ok``."""
        self._check_open()
        if isinstance(doc_ids, str) or not isinstance(doc_ids, Iterable):
            raise InvalidInputError(f"delete_many takes an iterable of document ids, got {type(doc_ids).__name__}")
        ids = [check_doc_id(d) for d in doc_ids]
        where = self._find(ids)
        missing = [d for d in ids if d not in where]
        if missing and not missing_ok:
            raise NotFoundError(f"no document {missing[0]!r} in {self.root} ({len(missing)} missing); "
                                "nothing was deleted (pass missing_ok=True to delete the others)")
        groups: dict[int, list[str]] = {}
        for d, s in where.items():
            groups.setdefault(s, []).append(d)
        w = self.writers()
        done = self._write({s: w[s].delete.remote(g, True) for s, g in groups.items()}, f"deleting from {self.root}")
        return Deleted(sum(c for c, _ in done.values()), doc_ids=tuple(d for _, ds in done.values() for d in ds))

    # ------------------------------------------------------------------ maintenance
    def stats(self) -> ClusterStats:
        per = self._fan_all("stats", what="stats")
        sources: dict[str, int] = {}
        for st in per:
            for name, n in st.sources.items():
                sources[name] = sources.get(name, 0) + n
        return ClusterStats(
            documents=sum(s.documents for s in per), chunks=sum(s.chunks for s in per),
            tokens=sum(s.tokens for s in per), sources=sources, bytes_on_disk=sum(s.bytes_on_disk for s in per),
            index_vectors=sum(s.index_vectors for s in per), unindexed=sum(s.unindexed for s in per), shards=per,
        )

    def check(self, fix: bool = False) -> ClusterCheck:
        """Each shard's :meth:`ragstore.Store.check` (``fix`` by its writer), and the routing: every
        document must be in the shard its id (or source) routes to, so none is in two shards."""
        self._check_open()
        if fix:
            w = self.writers()
            got = self._write({s: w[s].check.remote(True, self.manifest, s) for s in range(self.shards)}, "check")
            per = [got[s] for s in range(self.shards)]
        else:
            per = [self._ray.get(self._reader(s).check.remote(self.manifest, s)) for s in range(self.shards)]
        problems = []
        for s, (report, misplaced) in enumerate(per):
            problems += [f"shard {s}: {p}" for p in report.problems]
            if misplaced:
                problems.append(f"shard {s}: {len(misplaced)} document(s) route to another shard, e.g. "
                                f"{misplaced[0]!r}")
        reports = [r for r, _ in per]
        return ClusterCheck(ok=not problems, problems=problems, documents=sum(r.documents for r in reports),
                            chunks=sum(r.chunks for r in reports), shards=reports)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close every shard store (writers save their index) and end the actors. Safe twice."""
        if self._closed:
            return
        self._closed = True
        kill_all([r for group in self._readers for r in group])
        if self._writers is not None:
            kill_all(self._writers)
            self._writers = None

    def __enter__(self) -> ShardedStore:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedStore({self.root!r}, shards={self.shards}, route={self.manifest.route!r})"


def actor_options_for(extra: dict[str, Any] | None) -> dict[str, Any]:
    return actor_options(extra)
