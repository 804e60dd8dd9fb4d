"""build(): documents read, embedded in a pool of actors and written by one writer per shard.

Each batch of documents is checked here, routed (:mod:`.routing`), filtered by what the
shards already hold with the same content (so a rerun skips it: the build resumes), chunked
and embedded by the :class:`~.actors.EmbedWorker` pool, and written by each shard's
:class:`~.actors.ShardWriter` through ``Store.add_many`` with the precomputed vectors. The
embedding of a batch overlaps the writes of the one before.

Every shard write is an ordinary store's batch of LMDB transactions, so a writer killed at any
moment (its node lost) leaves its shard consistent: each batch it committed is kept, the rest
is not there. A lost writer is restarted by Ray (on another node if it must) and the batch
written again (``on_shard_error="retry"``), or the build stops with a :class:`ShardError`
("raise"); either way, running ``build`` again completes it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine.chunking import check_text
from ..engine.inputs import check_doc_id, check_meta, check_source, coerce_doc, content_hash
from ..errors import ConfigMismatchError, InvalidInputError
from .actors import EmbedWorker, ShardWriter, remote_class
from .routing import Manifest, check_layout, read_manifest, shard_path, write_manifest
from .runtime import actor_options as spread_options
from .runtime import check_on_error, connect, gather, kill_all, shard_error

__all__ = ["build", "BuildSummary", "BuildProgress", "read_jsonl"]


@dataclass(frozen=True)
class BuildProgress:
    """Passed to ``build(on_progress=...)`` after each batch is committed by every shard."""

    documents: int  # read so far
    written: int  # added or replaced
    skipped: int  # already held by their shard with this content
    invalid: int
    chunks: int
    seconds: float


@dataclass(frozen=True)
class BuildSummary:
    documents: int
    written: int
    skipped: int
    invalid: int
    chunks: int
    seconds: float
    per_shard: list[int] = field(default_factory=list)  # documents written to each shard
    retried: int = 0  # shard or pool calls made again after an actor died
    embed_actors: int = 0
    embed_seconds: float = 0.0  # waiting for the pool
    write_seconds: float = 0.0  # waiting for the writers
    startup_seconds: float = 0.0  # until every writer had opened its store and every pool actor had started

    def __str__(self) -> str:
        return (f"{self.documents} documents ({self.written} written, {self.skipped} already held, "
                f"{self.invalid} invalid), {self.chunks} chunks in {self.seconds:.1f}s over "
                f"{len(self.per_shard)} shards")


def read_jsonl(paths: Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
    """Documents from JSON Lines files: one object a line with "id", "text" (and "source", "meta")."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise InvalidInputError(f"{os.fspath(path)} line {n} is not JSON: {e}") from None


def _documents(docs: Any) -> Iterable[Any]:
    if isinstance(docs, (str, os.PathLike)):
        return read_jsonl([docs])
    if isinstance(docs, (list, tuple)) and docs and all(isinstance(d, (str, os.PathLike)) for d in docs):
        return read_jsonl(docs)
    if not isinstance(docs, Iterable):
        raise InvalidInputError(f"build takes documents (an iterable, JSONL paths), got {type(docs).__name__}")
    return docs


def _batches(docs: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for d in docs:
        batch.append(d)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def build(
    root: str | os.PathLike[str],
    docs: Any,
    *,
    shards: int | None = None,
    embedder: Any = None,
    route: str = "id",
    batch_docs: int = 256,
    embed_actors: int | None = None,
    embed_cpus: float = 1.0,
    on_progress: Callable[[BuildProgress], Any] | None = None,
    on_invalid: Callable[[int, str | None, InvalidInputError], Any] | None = None,
    on_shard_error: str = "retry",
    retry_timeout: float = 120.0,
    address: str | None = None,
    actor_options: dict[str, Any] | None = None,
    **store_options: Any,
) -> BuildSummary:
    """Build (or resume building) the sharded store at ``root`` from ``docs``.

    - ``docs``: documents as ``Store.add_many`` takes them (``Doc``, mappings, (id, text)
      pairs; any iterable, e.g. a Ray Dataset's ``iter_rows()``), or JSONL paths.
    - ``shards``, ``route`` ("id": a stable hash of the document id; "source": of its source,
      so each source is one shard's): fixed by the first build; None reuses the recorded ones.
    - ``embedder``: a spec string ("minilm" ...) or an embedder object (it is pickled to the
      actors); None: the recorded one, "minilm" for a new store.
    - ``embed_actors``: the embedding pool's size (None: the cluster's CPUs), each taking
      ``embed_cpus`` CPUs. ``store_options``: those of :class:`ragstore.Store` for new shards
      (``chunk_tokens``, ``metric``, ``index_dtype`` ...).
    - A document its shard already holds with the same text, source and metadata is skipped
      before it is embedded: rerunning an interrupted build resumes it.
    - ``on_invalid(index, doc_id, error)``: report and skip bad documents (else they raise,
      after the batches before them are committed).
    """
    t0 = time.perf_counter()
    mode = check_on_error(on_shard_error)
    if isinstance(batch_docs, bool) or not isinstance(batch_docs, int) or batch_docs < 1:
        raise InvalidInputError(f"batch_docs must be a positive integer, got {batch_docs!r}")
    ray = connect(address)
    root = os.path.abspath(os.fspath(root))
    manifest = read_manifest(root)
    if manifest is None:
        if shards is None:
            raise InvalidInputError(f"{root} holds no sharded store yet: pass shards=N to make one")
        check_layout(shards, route)
        spec = embedder if embedder is not None else "minilm"
        name = spec if isinstance(spec, str) else str(getattr(spec, "name", type(spec).__name__))
        manifest = Manifest(shards=shards, route=route, embedder=name,
                            store_options={k: v for k, v in store_options.items() if v is not None})
        write_manifest(root, manifest)
    elif (shards is not None and shards != manifest.shards) or (route != "id" and route != manifest.route):
        raise ConfigMismatchError(
            f"{root} has {manifest.shards} shards routed by {manifest.route!r}; resharding is not supported "
            "(build a new root); leave shards and route unset to use the recorded ones")
    n = manifest.shards
    spec = embedder if embedder is not None else manifest.embedder
    writer_cls = remote_class(ShardWriter).options(**spread_options(actor_options))
    writers = [writer_cls.remote(shard_path(root, s), s, spec, store_options) for s in range(n)]
    pool: list[Any] = []
    try:
        layouts = [ray.get(w.layout.remote()) for w in writers]
        if len({(lay["tokenizer_json"], lay["chunk_tokens"]) for lay in layouts}) != 1:
            raise ConfigMismatchError(f"the shards of {root} chunk differently (tokenizer or chunk_tokens)")
        size = embed_actors or max(1, int(ray.cluster_resources().get("CPU", 1) // max(embed_cpus, 1e-3)))
        embed_cls = remote_class(EmbedWorker).options(**spread_options(actor_options, num_cpus=embed_cpus))
        pool = [embed_cls.remote(spec, layouts[0]["tokenizer_json"], layouts[0]["chunk_tokens"])
                for _ in range(size)]
        ray.get([p.where.remote() for p in pool])
        run = _Run(ray, manifest, writers, pool, mode, retry_timeout, on_invalid, on_progress, t0)
        run.startup_s = time.perf_counter() - t0
        for batch in _batches(_documents(docs), batch_docs):
            run.batch(batch)
        run.finish()
        kill_all(pool, close=False)
        pool = []
        kill_all(writers)  # each shard store closed: its index saved
        writers = []
    finally:
        kill_all(pool, close=False)
        kill_all(writers)
    return run.summary(size)


class _Run:
    """One build call's state: counts, and the writes in flight (one batch at a time)."""

    def __init__(self, ray: Any, manifest: Manifest, writers: list[Any], pool: list[Any], mode: str,
                 timeout: float, on_invalid: Any, on_progress: Any, t0: float) -> None:
        self.ray, self.manifest, self.writers, self.pool = ray, manifest, writers, pool
        self.mode, self.timeout, self.on_invalid, self.on_progress, self.t0 = mode, timeout, on_invalid, on_progress, t0
        self.read = self.written = self.skipped = self.invalid = self.chunks = self.retried = 0
        self.per_shard = [0] * manifest.shards
        self.embed_s = self.write_s = self.startup_s = 0.0
        self.in_flight: tuple[dict[int, Any], dict[int, Any], dict[int, int]] | None = None

    def _count_retry(self, _s: int) -> None:
        self.retried += 1

    def _gather(self, calls: dict[int, Any], what: str, refs: dict[int, Any] | None = None) -> dict[int, Any]:
        results, failed = gather(calls, mode=self.mode, timeout=self.timeout, on_retry=self._count_retry, refs=refs)
        if failed:
            raise shard_error(failed, f"build of {self.manifest.shards} shards ({what}; rerun build() to resume: "
                              "every shard keeps each batch it committed)", self.mode, self.timeout)
        return results

    def _bad(self, i: int, doc_id: Any, e: InvalidInputError) -> None:
        if self.on_invalid is None:
            raise e
        self.invalid += 1
        self.on_invalid(i, doc_id if isinstance(doc_id, str) else None, e)

    def batch(self, raws: list[Any]) -> None:
        first = self.read
        self.read += len(raws)
        items: dict[int, list[dict[str, Any]]] = {}
        for i, raw in enumerate(raws, first):
            try:
                d = coerce_doc(raw, i)
                doc_id = check_doc_id(d.id)
                text = check_text(d.text, f"text of document {doc_id!r}")
                source, meta = check_source(d.source), check_meta(d.meta)
            except InvalidInputError as e:
                self._bad(i, raw.get("id") if isinstance(raw, dict) else getattr(raw, "id", None), e)
                continue
            doc = {"id": doc_id, "text": text, "source": source or None, "meta": meta, "_i": i,
                   "_hash": content_hash(text, source, meta)}
            items.setdefault(self.manifest.shard(doc_id, source or None), []).append(doc)
        # what each shard holds already, unchanged (a rerun resumes here)
        asks = {s: [(d["id"], d["_hash"]) for d in g] for s, g in items.items()}
        held = self._gather({s: (lambda a, s=s, q=q: self.writers[s].unchanged.remote(q)) for s, q in asks.items()},
                            "looking up held documents")
        todo: list[tuple[int, dict[str, Any]]] = []
        for s, g in items.items():
            have = set(held[s])
            self.skipped += sum(d["id"] in have for d in g)
            todo += [(s, d) for d in g if d["id"] not in have]
        vectors = self._embed([d["text"] for _, d in todo])
        groups: dict[int, list[dict[str, Any]]] = {}
        for (s, item), v in zip(todo, vectors, strict=True):
            if isinstance(v, InvalidInputError):
                self._bad(item["_i"], item["id"], v)
                continue
            groups.setdefault(s, []).append({"id": item["id"], "text": item["text"], "source": item["source"],
                                             "meta": item["meta"], "vectors": v})
        self._collect()
        calls = {s: (lambda a, s=s, g=g: self.writers[s].write.remote(g, True)) for s, g in groups.items()}
        self.in_flight = (calls, {s: c(0) for s, c in calls.items()}, {s: len(g) for s, g in groups.items()})

    def _embed(self, texts: list[str]) -> list[Any]:
        if not texts:
            return []
        t = time.perf_counter()
        k = len(self.pool)
        # contiguous slices of about equal characters, one per pool actor
        total = sum(len(x) for x in texts) or 1
        bounds, acc = [0], 0
        for i, x in enumerate(texts):
            acc += len(x)
            if acc >= total * len(bounds) / k and len(bounds) < k:
                bounds.append(i + 1)
        bounds.append(len(texts))
        slices = {j: texts[a:b] for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)) if b > a}
        calls = {j: (lambda a, j=j, part=part: self.pool[(j + a) % k].embed.remote(part))
                 for j, part in slices.items()}
        got = self._gather(calls, "embedding")
        self.embed_s += time.perf_counter() - t
        return [v for j in sorted(got) for v in got[j]]

    def _collect(self) -> None:
        """Wait for the batch in flight to be committed by every shard."""
        if self.in_flight is None:
            return
        t = time.perf_counter()
        calls, refs, sizes = self.in_flight
        self.in_flight = None
        done = self._gather(calls, "writing", refs=refs)
        self.write_s += time.perf_counter() - t
        for s, r in done.items():
            self.written += r["added"] + r["replaced"]
            self.per_shard[s] += sizes[s]
            self.chunks += r["chunks"]
        if self.on_progress is not None:
            self.on_progress(BuildProgress(self.read, self.written, self.skipped, self.invalid, self.chunks,
                                           time.perf_counter() - self.t0))

    def finish(self) -> None:
        self._collect()

    def summary(self, size: int) -> BuildSummary:
        return BuildSummary(documents=self.read, written=self.written, skipped=self.skipped, invalid=self.invalid,
                            chunks=self.chunks, seconds=time.perf_counter() - self.t0, per_shard=self.per_shard,
                            retried=self.retried, embed_actors=size, embed_seconds=self.embed_s,
                            write_seconds=self.write_s, startup_seconds=self.startup_s)
