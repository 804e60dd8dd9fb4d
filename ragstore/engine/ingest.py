"""An ingest run: documents checked, chunked a stage at a time, embedded and committed in batches.

Documents are checked one by one as they arrive, then cut into chunks a stage
at a time: the tokenizer encodes a whole stage in parallel (one call per
document left a core idle). Stages are handled in input order, so errors,
results and commits come in the order of the input. A stage also ends once it
may hold enough chunks to fill the batch (a token covers at least one UTF-8
byte, so bytes / chunk_tokens bounds a document's chunks): commits come at the
same documents as when each was chunked alone, which matters for a slow
stream such as stdin.

Batches are pipelined: while one batch is committed (LMDB write, fsync, index
insert) in a background thread, the next is read, checked, chunked and
embedded; the embedder, the tokenizer, LMDB's fsync and usearch release the
GIL, so the two overlap. Commits still happen one at a time and in input
order, and the call returns only once every batch is durable; a document
whose id is in the batch being committed waits for that commit before it is
looked up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AlreadyExistsError, InvalidInputError
from ..types import AddResult, IngestProgress, IngestSummary
from .chunking import check_text
from .inputs import check_doc_id, check_meta, check_source, coerce_doc, content_hash
from .models import Models
from .records import Records
from .writes import Prepared, write_documents

__all__ = ["IngestRun"]

STAGE_DOCS = 64  # documents tokenized in one call
STAGE_CHARS = 1 << 18
EMBED_SLICE = 8192  # chunks embedded in one call
QUIET_REPORT = 1000  # documents skipped (unchanged, invalid) between two progress reports


class _RepeatedId(InvalidInputError):
    """An id given twice in one call without ``replace=True``: the later copy is bad input."""


@dataclass
class _Checked:
    """A document that passed the checks, waiting for its stage to be chunked."""

    index: int
    raw: Any
    doc_id: str
    text: str
    source: str
    meta: dict
    content_hash: str
    vectors: Any
    status: str  # "added" or "replaced"


@dataclass
class _Unchanged:
    """A document re-added with the content it has: skipped."""

    index: int
    raw: Any
    doc_id: str
    n_chunks: int


@dataclass
class _Counts:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    skipped: int = 0
    chunks: int = 0
    tokens: int = 0

    @property
    def documents(self) -> int:
        return self.added + self.replaced + self.unchanged + self.skipped


class IngestRun:
    """One ``add_many`` call. Build it with the store's parts, then :meth:`run` it once.

    ``after_commit`` is called after each committed batch (the index applies it).
    """

    def __init__(
        self,
        records: Records,
        models: Models,
        *,
        where: str,
        replace: bool,
        batch_size: int,
        after_commit: Callable[[], None],
        on_progress: Callable[[IngestProgress], Any] | None = None,
        on_invalid: Callable[[int, str | None, InvalidInputError], Any] | None = None,
        collect: bool = False,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.records = records
        self.models = models
        self.where = where
        self.replace = replace
        self.batch_size = batch_size
        self.after_commit = after_commit
        self.on_progress = on_progress
        self.on_invalid = on_invalid
        self.collect = collect
        self.results: list[AddResult] = []  # with collect=True: one per document, in input order
        self._counts = _Counts()
        self._t0 = time.perf_counter()
        self._pending: list[Prepared] = []  # chunked, waiting to be embedded and committed
        self._pending_ids: dict[str, int] = {}  # id -> its index in the input
        self._pending_chunks = 0
        self._staged: list[_Checked | _Unchanged] = []  # checked, waiting to be chunked
        self._staged_ids: dict[str, int] = {}
        self._staged_chars = 0
        self._staged_most = 0  # most chunks the staged documents can make
        self._quiet = 0  # documents since the last progress report
        self._chunk_tokens = models.config.chunk_tokens
        self._first_chunk_of_call = 0  # set when the run starts
        self._committer: ThreadPoolExecutor | None = None  # one thread, made at the first pipelined batch
        self._inflight: Future[list[Prepared]] | None = None  # the batch being committed
        self._inflight_ids: frozenset[str] = frozenset()
        self._commit_failed = False

    # ------------------------------------------------------------------ driving
    def run(self, docs: Iterable[Any]) -> IngestSummary:
        # Chunk ids only grow and the caller holds the writer lock and the store's
        # mutex: a document whose first chunk is at or past this id was written by
        # this call, so finding it again is a repeated id, not an existing document.
        with self.records.read() as txn:
            self._first_chunk_of_call = self.records.next_chunk_id(txn)
        if not isinstance(docs, Iterable) or isinstance(docs, (str, bytes, Mapping)):
            raise InvalidInputError(
                f"add_many takes an iterable of documents (Doc, mappings, (id, text) pairs), got {type(docs).__name__}"
            )
        try:
            for i, raw in enumerate(docs):
                try:
                    item = self._check(i, raw)
                except InvalidInputError as e:
                    self._run_stage()  # the documents before it come first
                    if isinstance(e, _RepeatedId) and self.on_invalid is None:
                        self._flush_all()  # as for any bad document: those before it are committed
                        c = self._counts
                        raise InvalidInputError(
                            f"{e}; {c.added + c.replaced} documents of this call (the first copy among them) "
                            "were committed before it and stay, nothing after it was written"
                        ) from None
                    self._invalid(i, raw, e)
                    continue
                except Exception:
                    self._run_stage()  # committed below, as the documents before a bad one are
                    raise
                self._stage(item)
            self._run_stage()
            self._flush_all()
        except Exception:
            # A bad document: commit the good ones before it, as documented (unless
            # committing is what failed). An interrupt (KeyboardInterrupt) keeps only
            # what was already committed.
            if self._commit_failed:
                self._settle()  # the commit's error, if the batch being committed failed unseen
            else:
                self._flush_all()
            raise
        finally:
            self._drain()
        c = self._counts
        return IngestSummary(
            documents=c.documents, added=c.added, replaced=c.replaced, unchanged=c.unchanged, skipped=c.skipped,
            chunks=c.chunks, tokens=c.tokens, seconds=time.perf_counter() - self._t0,
        )

    def progress(self) -> IngestProgress:
        c = self._counts
        return IngestProgress(
            documents=c.documents, chunks=c.chunks, tokens=c.tokens, added=c.added, replaced=c.replaced,
            unchanged=c.unchanged, skipped=c.skipped, seconds=time.perf_counter() - self._t0,
        )

    # ------------------------------------------------------------------ steps
    def _check(self, i: int, raw: Any) -> _Checked | _Unchanged:
        d = coerce_doc(raw, i)
        doc_id = check_doc_id(d.id)
        text = check_text(d.text, f"text of document {doc_id!r}")
        source = check_source(d.source)
        meta = check_meta(d.meta)
        h = content_hash(text, source, meta)
        first = self._pending_ids.get(doc_id, self._staged_ids.get(doc_id))
        if first is not None:
            if not self.replace:
                raise self._repeated(doc_id, i, f"as document #{first}")
            self._run_stage()
            self._flush_all()  # the same id twice in one call with replace=True: the later one wins
        elif doc_id in self._inflight_ids:
            self._settle()  # its batch is being committed: look it up once it is
        with self.records.read() as txn:
            old = self.records.get_doc(txn, doc_id)
        if old is not None:
            if not self.replace:
                if old.first_chunk >= self._first_chunk_of_call:
                    raise self._repeated(doc_id, i, "in a batch already committed")
                raise AlreadyExistsError(
                    f"document {doc_id!r} already exists in {self.where}; pass replace=True to "
                    "overwrite it (or `ragstore ingest`, which replaces changed documents)"
                )
            if old.content_hash == h and d.vectors is None:
                return _Unchanged(i, raw, doc_id, old.n_chunks)
        if d.vectors is None and self.models.config.precomputed:
            raise InvalidInputError(
                f"document {doc_id!r} has no vectors, and this store has no embedder to make them: "
                "pass vectors= (one row per chunk of Store.chunk(text))"
            )
        return _Checked(i, raw, doc_id, text, source, meta, h, d.vectors, "added" if old is None else "replaced")

    def _repeated(self, doc_id: str, i: int, first: str) -> _RepeatedId:
        return _RepeatedId(
            f"document id {doc_id!r} is given twice in this call (first {first}, again as document #{i}): "
            "the later copy is refused; give each document once, or pass replace=True to let the last copy win"
        )

    def _stage(self, item: _Checked | _Unchanged) -> None:
        self._staged.append(item)
        if isinstance(item, _Checked):
            self._staged_ids[item.doc_id] = item.index
            self._staged_chars += len(item.text)
            self._staged_most += -(-len(item.text.encode("utf-8", "surrogatepass")) // self._chunk_tokens)
        if (
            len(self._staged) >= STAGE_DOCS
            or self._staged_chars >= STAGE_CHARS
            or self._pending_chunks + self._staged_most >= self.batch_size
        ):
            self._run_stage()

    def _run_stage(self) -> None:
        if not self._staged:
            return
        items = self._staged
        self._staged = []
        self._staged_ids = {}
        self._staged_chars = self._staged_most = 0
        todo = [it for it in items if isinstance(it, _Checked)]
        cut = dict(zip((id(it) for it in todo), self.models.chunker.chunk_each([it.text for it in todo]), strict=True))
        for it in items:
            if isinstance(it, _Unchanged):
                self._counts.unchanged += 1
                if self.collect:
                    self.results.append(AddResult(it.doc_id, "unchanged", it.n_chunks))
                self._skipped_quietly()
                continue
            try:
                chunked = cut[id(it)]
                if isinstance(chunked, InvalidInputError):
                    raise chunked
                vecs = None if it.vectors is None else self.models.rules.check(it.vectors, len(chunked.chunks))
            except InvalidInputError as e:
                self._invalid(it.index, it.raw, e)
                continue
            p = Prepared(it.doc_id, it.source, it.meta, it.content_hash, chunked, vecs, it.status)
            self._pending.append(p)
            self._pending_ids[p.doc_id] = it.index
            self._pending_chunks += p.n_chunks
            if self.collect:
                self.results.append(AddResult(p.doc_id, p.status, p.n_chunks))
            if self._pending_chunks >= self.batch_size:
                self._flush()

    def _flush(self, *, last: bool = False) -> None:
        """Embed the pending batch, then commit it: in the background, unless ``last``."""
        if not self._pending:
            if last:
                self._settle()
            return
        batch = self._pending
        self._pending = []
        self._pending_ids = {}
        self._pending_chunks = 0
        self._embed(batch)
        self._settle()  # commits stay one at a time, in input order
        if last:
            self._commit(batch)
            self._committed(batch)
            return
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragstore-commit")
        self._inflight = self._committer.submit(self._commit, batch)
        self._inflight_ids = frozenset(p.doc_id for p in batch)

    def _flush_all(self) -> None:
        """Every batch committed, the pending one included: durable when this returns."""
        self._flush(last=True)

    def _embed(self, batch: list[Prepared]) -> None:
        need = [p for p in batch if p.vectors is None]
        if need:
            texts = [c.text for p in need for c in p.chunked.chunks]
            # a slice at a time: one call for a huge document's chunks held the embedder's
            # activations (and the float64 copy the checks make) for all of them at once
            vecs = np.concatenate([self.models.embed(texts[i : i + EMBED_SLICE])
                                   for i in range(0, len(texts), EMBED_SLICE)])
            del texts
            offsets = np.cumsum([0] + [p.n_chunks for p in need])
            for p, a, b in zip(need, offsets[:-1], offsets[1:], strict=True):
                p.vectors = vecs[a:b]

    def _commit(self, batch: list[Prepared]) -> list[Prepared]:
        try:
            write_documents(self.records, batch, self.models.config.vector_numpy_dtype)
            self.after_commit()
        except BaseException:
            self._commit_failed = True
            raise
        return batch

    def _committed(self, batch: list[Prepared]) -> None:
        for p in batch:
            setattr(self._counts, p.status, getattr(self._counts, p.status) + 1)
            self._counts.chunks += p.n_chunks
            self._counts.tokens += p.chunked.n_tokens
        self._report()

    def _settle(self) -> None:
        """Wait for the batch being committed; its error (a full disk ...) is raised here."""
        f = self._inflight
        if f is None:
            return
        self._inflight = None
        self._inflight_ids = frozenset()
        self._committed(f.result())

    def _drain(self) -> None:
        """Nothing left running in the background when the call returns or raises."""
        try:
            if self._inflight is not None:
                self._inflight.exception()  # an error is the caller's already (or an interrupt is)
        finally:
            self._inflight = None
            if self._committer is not None:
                self._committer.shutdown(wait=True)
                self._committer = None

    # ------------------------------------------------------------------ reporting
    def _report(self) -> None:
        self._quiet = 0
        if self.on_progress is not None:
            self.on_progress(self.progress())

    def _skipped_quietly(self) -> None:
        self._quiet += 1
        if self._quiet >= QUIET_REPORT:
            self._report()

    def _invalid(self, i: int, raw: Any, e: InvalidInputError) -> None:
        if isinstance(e, _RepeatedId):
            e = InvalidInputError(str(e))  # the public class, for the caller's report
        if self.on_invalid is None:
            raise e
        self._counts.skipped += 1
        doc_id = raw.get("id") if isinstance(raw, Mapping) else getattr(raw, "id", None)
        self.on_invalid(i, doc_id if isinstance(doc_id, str) else None, e)
        self._skipped_quietly()
