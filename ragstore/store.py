"""The store: the one entry object of ragstore, a facade over the engine's parts.

LMDB (:mod:`.engine.records`) is the system of record; the usearch index
(:mod:`.engine.index`) is derived from it and kept in step by
:mod:`.engine.sync`. Every write is one LMDB transaction that also appends an
entry to the change log; the index applies the log after the commit, and on
open it replays whatever LMDB committed after the index's last checkpoint. So
an acknowledged write is never lost, whatever happens to the index files.
See docs/durability.md.

This module opens and closes the parts, guards each call (open, writable) and
serializes them with one mutex; the work is done by the parts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .config import NOT_GIVEN, QueryOptions
from .embedders.base import Embedder
from .engine.catalog import Catalog
from .engine.chunking import Chunker, check_text
from .engine.hybrid import LexicalSearcher, query_texts
from .engine.index import VectorIndex
from .engine.ingest import IngestRun
from .engine.inputs import check_doc_id
from .engine.lexical import LexicalIndex
from .engine.locks import StoreLocks
from .engine.maintenance import Maintenance, remove_compaction_leftovers
from .engine.models import Models, open_config
from .engine.records import Records, prepare_folder
from .engine.search import Plan, Searcher
from .engine.sync import IndexSync
from .engine.transfer import backup, copy_docs, export_jsonl, read_export, unless_unchanged
from .engine.writes import delete_documents
from .errors import (
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    StoreNotWritableError,
)
from .types import (
    AddResult,
    BackupResult,
    CheckReport,
    Chunk,
    CompactResult,
    Deleted,
    Doc,
    Document,
    DocumentInfo,
    DocumentPage,
    Exported,
    Hit,
    IndexedLexical,
    IngestSummary,
    Stats,
    StoredChunk,
)

__all__ = ["Store", "open"]

def open(path: str | os.PathLike[str], **kwargs: Any) -> Store:  # noqa: A001 - mirrors lmdb.open
    """Open (or create) the store at ``path``. See :class:`Store` for options."""
    return Store(path, **kwargs)


class Store:
    """An on-disk datastore of chunks, their continuations and their vectors.

    Options are keyword-only; docs/guide.md has a table of each with its
    default. ``embedder=None`` uses the embedder the store was made with
    ("minilm-int8" for a new store; another model is refused with
    :class:`ConfigMismatchError`). ``chunk_tokens``, ``metric``,
    ``index_dtype``, ``vector_dtype``, ``connectivity``, ``tokenizer`` and
    ``lexical`` are fixed at creation (None: as recorded, or the default of
    :mod:`ragstore.config`). ``sync=False`` keeps atomicity but a power loss
    may drop the last commits (never a process crash). ``lock_timeout``:
    seconds a write waits for another process's writer lock
    (:class:`StoreLockedError`); readers never wait.

    A store is a context manager; ``close()`` is safe twice. One process
    writes at a time (the lock is taken at the first write); any number of
    processes read, each seeing a writer's commits at its next query.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        embedder: str | Embedder | None = None,
        tokenizer: Any = None,
        chunk_tokens: int | None = None,
        metric: str | None = None,
        index_dtype: str | None = None,
        vector_dtype: str | None = None,
        connectivity: int | None = None,
        expansion_add: int = 128,
        expansion_search: int = 64,
        sync: bool = True,
        lock_timeout: float = 0.0,
        map_size: int | None = None,
        checkpoint_every: int = 100_000,
        threads: int = 0,
        lexical: bool | dict[str, Any] | None = None,
    ) -> None:
        self._closed = True
        self.path = os.path.abspath(os.fspath(path))
        self.readonly = readonly
        self._mutex = threading.RLock()
        self._locks = StoreLocks(self.path, lock_timeout=lock_timeout)
        prepare_folder(self.path, create=create and not readonly)
        try:
            self._locks.take_open()
            self._records = Records.acquire(self.path, sync=sync, map_size=map_size)
            self._closed = False
            given = dict(chunk_tokens=chunk_tokens, metric=metric, index_dtype=index_dtype,
                         vector_dtype=vector_dtype, connectivity=connectivity, lexical=lexical)
            self._models: Models = open_config(
                self._records, self.path, create=create, readonly=readonly, embedder=embedder,
                tokenizer=tokenizer, given=given, take_writer=self._take_writer,
            )
            cfg = self.config = self._models.config
            self._index = VectorIndex(
                os.path.join(self.path, "index"), dim=cfg.dim, metric=cfg.metric, dtype=cfg.index_dtype,
                connectivity=cfg.connectivity, expansion_add=expansion_add, expansion_search=expansion_search,
                threads=threads,
            )
            self._sync = IndexSync(self._records, self._index, vector_dtype=cfg.vector_numpy_dtype, dim=cfg.dim,
                                   checkpoint_every=checkpoint_every)
            self._searcher = Searcher(self._records, self._index, self._models)
            self._lexical = LexicalIndex(self._records)
            self._catalog = Catalog(self._records, cfg, self._searcher, where=self.path)
            self._lexsearch = LexicalSearcher(self._records, self._lexical, self._searcher)
            self._maintenance = Maintenance(self.path, cfg, self._records, self._index, self._sync, self._locks,
                                            self._models, lexical=self._lexical)
            with self._mutex:
                replayed = self._sync.open()
                # (a damaged checkpoint was rebuilt: save a sound one, so the next open need not)
                if (replayed >= max(1, checkpoint_every // 10) or self._index.found_damage) and not readonly:
                    self._checkpoint_if_free()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ models
    @property
    def embedder(self) -> Any:
        """The store's embedder, loaded on first use."""
        self._check_open()
        return self._models.embedder

    @property
    def chunker(self) -> Chunker:
        self._check_open()
        return self._models.chunker

    # ------------------------------------------------------------------ guards and locks
    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed; open it again with ragstore.open()")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.path} was opened with readonly=True; reopen it without to write")
        self._take_writer()
        # outside any transaction: another process may have built the lexical index since we opened
        self._records.open_lexical_tables()

    def _take_writer(self) -> None:
        with self._mutex:  # two threads' first writes must not race for the same lock
            if self.readonly:
                raise ReadOnlyError(f"store {self.path} was opened with readonly=True; reopen it without to write")
            if self._records.readonly:  # LMDB was opened read-only: the folder is not writable
                raise StoreNotWritableError(
                    f"the store at {self.path} cannot be written: its folder is not writable by this user or is "
                    "on a read-only file system. Open it read-only (readonly=True, --read-only) to read it, or "
                    "make the folder writable; nothing was written"
                )
            if not self._locks.take_writer():
                return
            remove_compaction_leftovers(self.path)
            if hasattr(self, "_sync"):  # not while the store is being created
                self._sync.refresh()  # another writer may have committed since our last look

    def _checkpoint_if_free(self) -> None:
        """After a long recovery, save it for the next opener if no one else is writing."""
        had = self._locks.writing
        try:
            self._take_writer()
        except (StoreLockedError, StorageError):
            return  # someone else writes, or no one can: the next open replays again
        try:
            self._sync.checkpoint_or_warn()  # opening must not depend on the disk having room
        finally:
            if not had:
                self._locks.release_writer()

    def _release(self) -> None:
        self._locks.release()
        records = self.__dict__.pop("_records", None)
        if records is not None:
            records.release()
        self._closed = True

    # ------------------------------------------------------------------ writes
    def chunk(self, text: str) -> list[Chunk]:
        """The chunks ``add`` would make of ``text`` (to precompute their vectors)."""
        return self.chunker.chunk(check_text(text)).chunks

    def add(
        self,
        doc_id: str,
        text: str,
        *,
        source: str | None = None,
        meta: Mapping[str, Any] | None = None,
        vectors: Any = None,
        replace: bool = False,
    ) -> AddResult:
        """Add one document; durable when this returns.

        ``vectors``: optional precomputed (n_chunks, dim) array for ``chunk(text)``.
        An existing ``doc_id`` raises :class:`AlreadyExistsError` unless
        ``replace=True``; replacing with the same content does nothing.
        """
        run = self._ingest_run(replace=replace, batch_size=256, collect=True)
        with self._mutex:
            run.run([Doc(doc_id, text, source, meta, vectors)])
        return run.results[0]

    def update(self, doc_id: str, text: str, **kwargs: Any) -> AddResult:
        """Replace an existing document (:class:`NotFoundError` if there is none)."""
        self._check_open()
        if doc_id not in self:
            raise NotFoundError(f"no document {doc_id!r} in {self.path}; use add() to create it")
        return self.add(doc_id, text, replace=True, **kwargs)

    def add_many(
        self,
        docs: Iterable[Doc | Mapping[str, Any]],
        *,
        replace: bool = False,
        batch_size: int = 256,
        on_progress: Any = None,
        on_invalid: Any = None,
    ) -> IngestSummary:
        """Add many documents, committing every ``batch_size`` chunks.

        Batches commit in input order (the next one is read, chunked and
        embedded while one commits), so an interrupted call keeps every batch
        it committed; the call returns once all are durable. With ``replace=True``, unchanged
        documents are skipped and changed ones replaced: re-running an ingest
        resumes it.

        A bad document (:class:`InvalidInputError`) raises after the documents
        before it are committed, unless ``on_invalid(index, doc_id, error)`` is
        given: then it is reported there and skipped (``doc_id`` is None when
        the id itself is bad). ``on_progress(IngestProgress)`` is called after
        each commit and every 1,000 documents skipped as unchanged or invalid.

        An id given twice in one call: with ``replace=False`` the later copy is
        bad input (:class:`InvalidInputError`, not :class:`AlreadyExistsError`,
        which means the id was stored before the call): raised, after the
        documents before it are committed (the message names the id and counts
        them), or reported to ``on_invalid`` while the rest goes in. With
        ``replace=True`` the last copy wins (the summary counts the first as
        added and the later as replaced).
        """
        run = self._ingest_run(replace=replace, batch_size=batch_size, on_progress=on_progress, on_invalid=on_invalid)
        with self._mutex:
            return run.run(docs)

    def _ingest_run(self, **options: Any) -> IngestRun:
        self._check_writable()
        return IngestRun(self._records, self._models, where=self.path, after_commit=self._sync.after_write, **options)

    def delete(self, doc_id: str) -> int:
        """Delete a document, its chunks and vectors; returns the chunks removed."""
        return self.delete_many([doc_id])

    def delete_many(self, doc_ids: Iterable[str], *, missing_ok: bool = False) -> Deleted:
        """Delete several documents in one transaction; returns what was deleted.

        The result is the number of chunks removed (an ``int``) with the ids of
        the documents removed in ``.doc_ids``. A missing id raises
        :class:`NotFoundError` (and deletes nothing) unless ``missing_ok=True``.
        """
        self._check_writable()
        if isinstance(doc_ids, str) or not isinstance(doc_ids, Iterable):
            raise InvalidInputError(f"delete_many takes an iterable of document ids, got {type(doc_ids).__name__}")
        ids = [check_doc_id(d) for d in doc_ids]
        with self._mutex:
            deleted = delete_documents(self._records, ids, missing_ok=missing_ok, where=self.path)
            self._sync.after_write()
        return deleted

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str) -> Document:
        """The stored document, with its text rebuilt exactly from its chunks."""
        self._check_open()
        return self._catalog.document(doc_id)

    def vectors(self, doc_id: str) -> np.ndarray:
        """The stored vectors of a document's chunks, float32 (n_chunks, dim), in chunk order."""
        self._check_open()
        return self._catalog.vectors(doc_id)

    def __contains__(self, doc_id: object) -> bool:
        self._check_open()
        return self._catalog.contains(doc_id)

    def __len__(self) -> int:
        self._check_open()
        return self._catalog.count()

    def doc_ids(self, *, source: str | None = None) -> Iterator[str]:
        """Document ids in byte order, optionally of one source ("": those without one)."""
        self._check_open()
        return iter(self._catalog.doc_ids(source))

    def sources(self) -> dict[str, int]:
        """Live chunks per source ("" for documents without one)."""
        self._check_open()
        return self._catalog.sources()

    def get_chunk(self, chunk_id: int) -> Hit:
        """One chunk with its continuation (score 0)."""
        self._check_open()
        return self._catalog.chunk_hit(chunk_id)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` by the store's embedder (normalized for cosine)."""
        self._check_open()
        return self._models.embed(texts)

    # ------------------------------------------------------------------ catalog (engine/catalog.py)
    def list_documents(self, *, source: str | None = None, after: str | None = None, limit: int = 100) -> DocumentPage:
        """A page of documents (no text) in id order; ``after``: the previous page's ``next_cursor``."""
        self._check_open()
        return self._catalog.documents(source=source, after=after, limit=limit)

    def iter_documents(self, *, source: str | None = None) -> Iterator[DocumentInfo]:
        """Every document (of one source; "": those without one), read page by page."""
        self._check_open()
        return self._catalog.all_documents(source=source)

    def iter_chunks(self, doc_id: str | None = None, *, vectors: bool = False) -> Iterator[StoredChunk]:
        """The chunks of a document in order, or of the store in chunk-id order; optionally with vectors."""
        self._check_open()
        return self._catalog.chunks(doc_id, vectors=vectors)

    def update_meta(self, doc_id: str, meta: Mapping[str, Any], *, merge: bool = False) -> DocumentInfo:
        """Replace (``merge``: update) a document's metadata in one transaction, without re-embedding."""
        self._check_writable()
        with self._mutex:
            return self._catalog.update_meta(doc_id, meta, merge=merge)

    # ------------------------------------------------------------------ moving data (engine/transfer.py)
    def export_jsonl(self, path: str | os.PathLike[str], *, vectors: bool = False,
                     source: str | None = None) -> Exported:
        """The documents (optionally with their vectors) written to a JSONL file from one snapshot."""
        self._check_open()
        return export_jsonl(self._records, self.config, os.fspath(path), vectors=vectors, source=source)

    def import_jsonl(self, path: str | os.PathLike[str], *, vectors: bool | None = None, batch_size: int = 256,
                     on_progress: Any = None) -> IngestSummary:
        """Add an :meth:`export_jsonl` file's documents (checked whole first; reruns skip unchanged ones);
        its vectors, when used (``vectors``: None = if it has them), are not re-embedded."""
        self._check_writable()
        docs = unless_unchanged(self._records, read_export(os.fspath(path), self.config, vectors=vectors))
        return self.add_many(docs, replace=True, batch_size=batch_size, on_progress=on_progress)

    def backup(self, dest: str | os.PathLike[str]) -> BackupResult:
        """A consistent copy (also while a writer runs) in the new folder ``dest``, opened like any store."""
        self._check_open()
        if self._locks.writing and self._index.needs_checkpoint:
            with self._mutex:  # our own writes in the copied index too (not only replayed on open)
                self._sync.checkpoint_or_warn()
        return backup(self._records, self._index.dir, os.fspath(dest))

    def reembed(self, target: str | os.PathLike[str] | Store, *, embedder: str | Embedder | None = None,
                batch_size: int = 256, on_progress: Any = None, **store_options: Any) -> IngestSummary:
        """Every document copied into ``target`` (a store, or a path made with ``embedder`` and
        ``store_options``), embedded by its embedder; a rerun skips what is there unchanged."""
        self._check_open()
        where = target.path if isinstance(target, Store) else os.path.abspath(os.fspath(target))
        if where == self.path:
            raise InvalidInputError(f"cannot re-embed {self.path} into itself; give a new store's path")
        out = target if isinstance(target, Store) else Store(target, embedder=embedder, **store_options)
        try:
            return out.add_many(copy_docs(self._records), replace=True, batch_size=batch_size, on_progress=on_progress)
        finally:
            if out is not target:
                out.close()

    # ------------------------------------------------------------------ queries
    def query(
        self,
        query: str | np.ndarray | Sequence[float],
        k: int = NOT_GIVEN,
        *,
        options: QueryOptions | None = None,
        **opts: Any,
    ) -> list[Hit]:
        """The ``k`` nearest chunks to a text or a vector, best first.

        Keyword options (see :class:`ragstore.QueryOptions` for each, and its
        defaults): ``sources``, ``exclude_docs``, ``rerank``, ``exact``,
        ``expansion``, ``oversample``, ``mode`` ("dense", "lexical", "hybrid":
        see docs/hybrid.md), ``fusion``, ``fusion_depth``, ``min_score``; or a whole
        ``options=QueryOptions(...)``, which the keywords given override.
        """
        if isinstance(query, str):
            q: Any = query
        else:
            q = np.asarray(query)
            if q.ndim != 1:
                raise InvalidInputError(f"query vector must be 1-D, got shape {q.shape}; use query_many for several")
            q = q[None, :]
        return self.query_many(q, k, options=options, **opts)[0]

    def query_many(
        self,
        queries: Sequence[str] | np.ndarray,
        k: int = NOT_GIVEN,
        *,
        options: QueryOptions | None = None,
        **opts: Any,
    ) -> list[list[Hit]]:
        """:meth:`query` for many texts (or a 2-D array) at once: one list of hits each.

        ``exclude_docs`` is a flat list of ids excluded from every query, or one
        iterable of ids per query (RETRO training batches mix documents).
        """
        self._check_open()
        merged = QueryOptions.for_call(options, k, opts)
        if merged.mode != "dense":
            return self._query_lexical(queries, merged)
        Q = self._searcher.matrix(queries)
        plan = Plan(merged, self.config.index_dtype, len(Q))  # validates the options
        with self._mutex, self._records.read() as txn:
            self._sync.catch_up(txn)
            return merged.keep(self._searcher.search(txn, Q, plan))

    def _query_lexical(self, queries: Any, opts: QueryOptions) -> list[list[Hit]]:
        opts.validate()
        texts = query_texts(queries, opts.mode)
        Q = self._searcher.matrix(texts) if opts.mode == "hybrid" else None
        self._records.open_lexical_tables()  # before the transaction, which sees only tables opened before it
        with self._mutex, self._records.read() as txn:
            self._sync.catch_up(txn)
            return opts.keep(self._lexsearch.search(txn, texts, Q, opts, self.config.index_dtype))

    def retrieve_sequence(self, text_or_token_ids: Any, **kwargs: Any) -> Any:
        """RETRO retrieval for a whole sequence: k neighbours (+ continuations) per chunk.

        See :func:`ragstore.retrieval.retro.retrieve_sequence` for the options (``k``,
        ``shift``, ``exclude_docs``, ``tokenizer``, ``max_overlap`` ...).
        """
        from .retrieval.retro import retrieve_sequence  # the RETRO layer builds on the store, not the reverse

        return retrieve_sequence(self, text_or_token_ids, **kwargs)

    # ------------------------------------------------------------------ maintenance
    def stats(self) -> Stats:
        """Counts and sizes: documents, chunks, tokens, bytes on disk, index state."""
        self._check_open()
        with self._mutex:
            return self._maintenance.stats()

    def check(self, fix: bool = False) -> CheckReport:
        """Verify LMDB's records against each other and the index against LMDB.

        With ``fix=True`` rebuild what is derived (the index, the counters).
        Damage to the records themselves is reported, never silently dropped.
        """
        if fix:
            self._check_writable()
        self._check_open()
        with self._mutex:
            return self._maintenance.check(fix=fix)

    def index_lexical(self, **settings: Any) -> IndexedLexical:
        """Build (or rebuild) the BM25 lexical index from the chunk records, in one transaction.

        For stores made without one (before ragstore had it, or with
        ``lexical=False``); ``settings`` override the analyzer and BM25
        defaults (``stopwords``, ``stemmer``, ``k1``, ``b``; see
        docs/hybrid.md). Readers see no lexical index, then a whole one.
        """
        self._check_writable()
        with self._mutex:
            built = self._maintenance.index_lexical(settings)
            self.config = self._models.config = self._maintenance.config = built.config
        return built

    def compact(self) -> CompactResult:
        """Rebuild the index without tombstones and give freed space back to the disk.

        The LMDB file is rewritten only when no other process has the store
        open (otherwise its free pages are reused by later writes instead).
        """
        self._check_writable()
        with self._mutex:
            return self._maintenance.compact()

    def checkpoint(self) -> None:
        """Save the index atomically and trim the change log it now covers."""
        self._check_writable()
        with self._mutex:
            self._sync.checkpoint()

    def refresh(self) -> None:
        """See what other processes committed (queries do this by themselves)."""
        self._check_open()
        with self._mutex:
            self._sync.refresh()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Save the index if this process wrote, release locks. Safe to call twice.

        Never raises for a checkpoint that cannot be saved (a full disk): every
        write is in LMDB already and the index is derived, so that warns
        (:class:`ragstore.CheckpointWarning`) and the next open replays the log.
        """
        if self._closed:
            return
        try:
            if self._locks.writing and self._index.needs_checkpoint:
                with self._mutex:
                    self._sync.checkpoint_or_warn()
        finally:
            self._release()

    def __enter__(self) -> Store:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self._release()  # no checkpoint from a finalizer: LMDB has everything
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("readonly" if self.readonly else "open")
        return f"Store({self.path!r}, {state})"

