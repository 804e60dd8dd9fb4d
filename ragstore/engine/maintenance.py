"""Upkeep of a store: counts and sizes, consistency checks and repair, compaction."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import lmdb
import numpy as np

from ..config import StoreConfig
from ..errors import CorruptStoreError, DamagedRecordError, RagstoreError, StorageError
from ..types import CheckReport, CompactResult, IndexedLexical, Stats
from .analysis import lexical_settings
from .chunking import Chunker
from .damage import DocDamage, is_damage
from .index import VectorIndex, fsync_path
from .inputs import content_hash
from .lexical import LexicalIndex
from .locks import StoreLocks
from .models import Models
from .records import ChunkRecord, DocRecord, LogOp, Records, u64, unpack
from .storage import storage_error
from .sync import IndexSync

T = TypeVar("T")

__all__ = ["Maintenance", "COMPACT_TMP", "SALVAGE_TMP", "remove_compaction_leftovers"]

COMPACT_TMP = "compact.tmp"
SALVAGE_TMP = "salvage.tmp"


class Maintenance:
    """``stats``, ``check(fix)`` and ``compact`` over the store's parts; the caller holds its mutex."""

    def __init__(
        self, path: str, config: StoreConfig, records: Records, index: VectorIndex, sync: IndexSync, locks: StoreLocks,
        models: Models | None = None, lexical: LexicalIndex | None = None,
    ) -> None:
        self.lexical = lexical
        self.models = models  # where a salvage finds the tokenizer again if its record is damaged
        self.path = path
        self.config = config
        self.records = records
        self.index = index
        self.sync = sync
        self.locks = locks

    def stats(self) -> Stats:
        rec = self.records
        with rec.read() as txn:
            self.sync.catch_up(txn)
            counts = rec.counts(txn)
            sources = rec.source_counts(txn)
        lmdb_bytes = rec.file_bytes()
        index_bytes = self.index.file_bytes()
        n_index = len(self.index)
        return Stats(
            documents=counts.documents,
            chunks=counts.chunks,
            tokens=counts.tokens,
            sources=sources,
            bytes_on_disk=lmdb_bytes + index_bytes,
            lmdb_bytes=lmdb_bytes,
            index_bytes=index_bytes,
            index_vectors=n_index,
            deleted_not_compacted=counts.tombstones,
            unindexed=max(0, counts.chunks - n_index),
        )

    # ------------------------------------------------------------------ check
    def check(self, *, fix: bool) -> CheckReport:
        """Records against each other and the index against the records; ``fix`` repairs.

        Derived state (the index, the counters) is rebuilt. Damaged records are
        listed one by one; with ``fix`` the readable documents are salvaged into
        a fresh LMDB file that replaces the damaged one, which is kept beside it
        (see docs/durability.md, "Damage and recovery").
        """
        derived: list[str] = []  # problems a rebuild of derived state mends
        rec = self.records
        with rec.read() as txn:
            self.sync.catch_up(txn)
            scan = self._scan(txn)
            counts = _safe(lambda: rec.counts(txn))
            if counts is None:
                scan.damage.append("meta table: a counter record is damaged")
            else:
                for key, have, actual in (("n_docs", counts.documents, scan.n_docs),
                                          ("n_chunks", counts.chunks, scan.n_chunks),
                                          ("n_tokens", counts.tokens, scan.n_tokens)):
                    if have != actual:
                        derived.append(f"counter {key} is {have}, records say {actual}")
            if _safe(lambda: rec.source_counts(txn)) != scan.per_source:
                derived.append("per-source chunk counts disagree with the records")
            derived += self._index_problems(scan.expected)
            derived += self._recall_problems(txn, scan.expected)
            if self.lexical is not None and not scan.damage and not scan.bad_docs:
                derived += self.lexical.problems(txn)  # (a salvage rebuilds it from the sound documents)
        derived += self.index.verify_files()
        problems = scan.problems + scan.damage
        fixed = False
        if fix and (scan.bad_docs or scan.damage):
            problems += self._salvage(scan)
            fixed = True
        elif fix and derived:
            self._fix_derived(scan.n_docs, scan.n_chunks, scan.n_tokens, scan.per_source)
            fixed = True
        ok = not problems and (not derived or fixed)
        return CheckReport(ok=ok, problems=problems + derived, fixed=fixed, documents=scan.n_docs, chunks=scan.n_chunks)

    def _scan(self, txn: lmdb.Transaction) -> _Scan:
        """Every record read and decoded; each damaged or inconsistent one is listed."""
        rec = self.records
        scan = _Scan()
        damaged: list[DocDamage] = []
        for doc_id, doc in rec.scan_docs(txn, damaged):
            why = self._doc_problem(txn, doc_id, doc)
            if why is not None:
                scan.problems.append(f"document {doc_id!r}: {why}")
                scan.bad_docs[doc_id] = why
                continue
            scan.n_docs += 1
            scan.n_chunks += doc.n_chunks
            scan.n_tokens += doc.n_tokens
            scan.per_source[doc.source] = scan.per_source.get(doc.source, 0) + doc.n_chunks
            scan.expected.setdefault(doc.source, []).append(np.asarray(doc.chunk_ids, dtype=np.uint64))
        for d in damaged:
            scan.damage.append(f"{d.where}: damaged record ({d.error})")
            if d.doc_id is not None:
                scan.bad_docs[d.doc_id] = d.error
        scan.damage += _table_damage(txn, rec.meta, "meta", unpack)
        tok = _safe(lambda: rec.get_meta(txn, "tokenizer"))
        if isinstance(tok, str) and _tokenizer_hash(tok) != self.config.tokenizer_hash:
            scan.damage.append("meta record b'tokenizer': damaged (it no longer hashes as the config records)")
        scan.damage += _table_damage(txn, rec.log, "change-log", LogOp.decode_entry)
        if not scan.damage and not scan.bad_docs:
            # (with damaged documents, their chunks would count here too: the salvage drops them)
            for table in ("chunks", "vectors"):
                entries = rec.table_entries(txn, table)
                if entries > scan.n_chunks:
                    scan.problems.append(f"{entries - scan.n_chunks} {table[:-1]} records belong to no document")
                elif entries < scan.n_chunks:  # (never a negative count "belonging to no document")
                    scan.problems.append(
                        f"{scan.n_chunks - entries} {table[:-1]} records are missing: the documents list "
                        f"{scan.n_chunks} chunks, the {table} table holds {entries}; restore a backup"
                    )
        return scan

    def _doc_problem(self, txn: lmdb.Transaction, doc_id: str, doc: DocRecord) -> str | None:
        """What is wrong with one document's chunk and vector records, or None."""
        rec, cfg = self.records, self.config
        row_bytes = cfg.dim * cfg.vector_numpy_dtype.itemsize
        parts: list[str] = []
        try:
            for pos, cid in enumerate(doc.chunk_ids):
                raw = txn.get(u64(cid), db=rec.chunks)
                c = None if raw is None else ChunkRecord.decode(raw)
                if c is None or c.doc_id != doc_id or c.position != pos:
                    return f"chunk {pos} missing or misfiled"
                parts += (c.pre, c.text)
            found, rows = rec.read_vectors(txn, list(doc.chunk_ids))
            if len(found) != doc.n_chunks or any(len(r) != row_bytes for r in rows):
                return "vectors missing or of the wrong size"
            vecs = np.frombuffer(b"".join(rows), dtype=cfg.vector_numpy_dtype).reshape(len(found), cfg.dim)
        except (lmdb.Error, DamagedRecordError) as e:
            if not is_damage(e):
                raise
            return f"a chunk or vector record is damaged ({e})"
        wide = vecs.astype(np.float64)
        if not np.isfinite(wide).all():
            return "a stored vector is damaged (it holds NaN or infinity)"
        if cfg.metric == "cos" and len(wide) and np.abs(np.linalg.norm(wide, axis=1) - 1).max() > 0.01:
            return "a stored vector is damaged (a cosine store keeps unit vectors)"
        parts.append(doc.tail)
        if content_hash("".join(parts), doc.source, doc.meta) != doc.content_hash:
            return "its text or metadata differ from what was written (the content hash does not match)"
        return None

    def _index_problems(self, expected: dict[str, list[np.ndarray]]) -> list[str]:
        out = []
        index_keys = self.index.keys()
        for source in set(expected) | set(index_keys):
            want = np.concatenate(expected[source]) if source in expected else np.zeros(0, np.uint64)
            have = index_keys.get(source, np.zeros(0, np.uint64))
            missing = np.setdiff1d(want, have)
            extra = np.setdiff1d(have, want)
            label = source or "(no source)"
            if len(missing):
                out.append(f"index shard {label!r}: {len(missing)} chunks have no vector in the index")
            if len(extra):
                out.append(f"index shard {label!r}: {len(extra)} vectors belong to no chunk")
        return out

    def _recall_problems(self, txn: lmdb.Transaction, expected: dict[str, list[np.ndarray]]) -> list[str]:
        """A sample of each shard's vectors searched for themselves: a damaged graph loses many."""
        cfg = self.config
        out = []
        rng = np.random.default_rng(0)  # the same sample each time: a report that does not flicker
        for source, parts in expected.items():
            keys = np.concatenate(parts)
            if len(keys) < 2 or source not in self.index.shards:
                continue
            sample = np.sort(rng.choice(keys, size=min(RECALL_SAMPLE, len(keys)), replace=False))
            found, vecs = self.records.vectors_of(txn, sample.tolist(), cfg.vector_numpy_dtype, cfg.dim)
            recall = self.index.self_recall(source, np.asarray(found, dtype=np.uint64), vecs)
            if recall < RECALL_FLOOR:
                out.append(f"index shard {source or '(no source)'!r}: only {recall:.0%} of {len(found)} sampled "
                           "vectors find themselves (a sound graph finds nearly all): the index is damaged")
        return out

    def _fix_derived(self, n_docs: int, n_chunks: int, n_tokens: int, per_source: dict[str, int]) -> None:
        rec = self.records

        def write(txn: lmdb.Transaction) -> None:
            rec.set_counts(txn, documents=n_docs, chunks=n_chunks, tokens=n_tokens)
            rec.set_source_counts(txn, per_source)

        rec.write(write)
        self._rebuild_lexical()
        with rec.read() as txn:
            self.sync.rebuild(txn)
        self.index.save_checkpoint()
        self.sync.since_checkpoint = 0

    # ------------------------------------------------------------------ lexical
    def _rebuild_lexical(self) -> None:
        """The lexical index rebuilt from the chunk records, if the store has one."""
        if self.lexical is None:
            return
        with self.records.read() as txn:
            settings = self.lexical.settings(txn)
        if settings is not None:
            self.lexical.build(settings, record_config=False)

    def index_lexical(self, given: dict[str, Any]) -> IndexedLexical:
        """Build the lexical index with ``given`` settings (defaults otherwise) and record them in the config."""
        if self.lexical is None:  # pragma: no cover - the facade always gives one
            raise RagstoreError("this store was opened without its lexical part")
        settings = lexical_settings(given)
        t = time.perf_counter()
        chunks, postings = self.lexical.build(settings, record_config=True)
        self.config = dataclasses.replace(self.config, lexical=settings)
        return IndexedLexical(chunks=chunks, postings=postings, seconds=time.perf_counter() - t, config=self.config)

    # ------------------------------------------------------------------ salvage
    def _salvage(self, scan: _Scan) -> list[str]:
        """Copy every sound document into a fresh LMDB file and put it in place of the damaged one.

        Sound: its record, all its chunk and vector records decode and agree, and
        its text hashes as it did when written. The damaged file is kept (a hard
        link, so no copy) as ``data.mdb.damaged-<time>``: nothing is dropped for
        good. Needs the store to itself, as compaction does; refuses otherwise.
        Returns report lines saying what was kept and what was lost.
        """
        with self.locks.exclusive() as alone:
            if not alone:
                raise CorruptStoreError(
                    f"the store at {self.path} has damaged records and other processes have it open: close "
                    "them, then run `ragstore check --fix` again (salvage rewrites the LMDB file)"
                )
            tmpdir = os.path.join(self.path, SALVAGE_TMP)
            shutil.rmtree(tmpdir, ignore_errors=True)
            try:
                os.makedirs(tmpdir)
                new = Records(tmpdir, readonly=False, sync=False, map_size=None)
                try:
                    notes: list[str] = []
                    kept = self._copy_sound(new, scan.bad_docs, notes)
                    new.env.sync(True)
                finally:
                    new.env.close()
            except (OSError, lmdb.Error, StorageError) as e:
                shutil.rmtree(tmpdir, ignore_errors=True)  # the space back; the damaged store is untouched
                err = e if isinstance(e, StorageError) else storage_error(
                    e, self.path, "writing the salvaged copy", lost="the store is unchanged")
                if err is None:
                    raise
                raise err from None
            data = os.path.join(self.path, "data.mdb")
            backup = f"{data}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            try:
                os.link(data, backup)  # the damaged bytes stay, under a new name
            except OSError:
                shutil.copy2(data, backup)
            fsync_path(os.path.join(tmpdir, "data.mdb"))
            os.replace(os.path.join(tmpdir, "data.mdb"), data)
            fsync_path(self.path)
            shutil.rmtree(tmpdir, ignore_errors=True)
            self.records.reopen()  # no one else has the store open: we hold open.lock exclusively
        self._rebuild_lexical()  # the new file has the sound chunks only
        with self.records.read() as txn:
            self.sync.rebuild(txn)
        self.index.save_checkpoint()
        self.sync.since_checkpoint = 0
        lost = sorted(scan.bad_docs)
        shown = ", ".join(repr(d) for d in lost[:20]) + (f" and {len(lost) - 20} more" if len(lost) > 20 else "")
        out = [f"salvaged {kept} documents into a new LMDB file; the damaged file is kept as {backup}", *notes]
        if lost:
            out.append(f"lost {len(lost)} damaged documents: {shown} (add them again from their originals)")
        if any(d.startswith("docs table") for d in scan.damage):
            out.append("lost the documents stored in the unreadable pages of the docs table (their ids are "
                       "unknown): compare the store's ids with your originals")
        return out

    def _tokenizer_again(self) -> str | None:
        """The store's tokenizer from the embedder (or the one given at open), if it hashes as recorded."""
        if self.models is None:
            return None
        given = getattr(self.models, "_chunker", None)  # a tokenizer= given at open, checked against the hash then
        candidates: list[Callable[[], Any]] = [lambda: given.tokenizer_json if given is not None else None,
                                               lambda: self.models.embedder.tokenizer_json()]  # type: ignore[union-attr]
        for get in candidates:
            try:
                tok = get()
                if tok is not None:
                    tok = Chunker(tok, self.config.chunk_tokens).tokenizer_json
            except (RagstoreError, AttributeError, ValueError, OSError):
                continue  # no embedder here, or one without a tokenizer
            if isinstance(tok, str) and _tokenizer_hash(tok) == self.config.tokenizer_hash:
                return tok
        return None

    def _copy_sound(self, new: Records, bad: dict[str, str], notes: list[str]) -> int:
        """Write the sound documents and the settings of this store into ``new``; returns documents kept."""
        rec = self.records
        with rec.read() as txn:
            meta = {}
            for key in ("config", "tokenizer", "next_chunk", "seq"):
                value = _safe(functools.partial(rec.get_meta, txn, key))
                sound = isinstance(value, str) and _tokenizer_hash(value) == self.config.tokenizer_hash
                if key == "tokenizer" and not sound:
                    value = self._tokenizer_again()
                    if value is not None:
                        notes.append("restored the damaged tokenizer record from the embedder's tokenizer (same hash)")
                if value is None and key in ("config", "tokenizer"):
                    raise CorruptStoreError(
                        f"the store at {self.path} lost its {key} record, without which its documents cannot be "
                        "read or added: nothing can be salvaged safely; restore a backup"
                    )
                meta[key] = value
            nxt = meta["next_chunk"] if isinstance(meta["next_chunk"], int) else 1
            seq = meta["seq"] if isinstance(meta["seq"], int) else 0

            def settings(wtxn: lmdb.Transaction) -> None:
                new.put_meta(wtxn, "config", meta["config"])
                new.put_meta(wtxn, "tokenizer", meta["tokenizer"])
                # a sequence past the old one: an index of the old file is not taken for current
                new.put_meta(wtxn, "seq", seq + 1)
                new.put_meta(wtxn, "tombstones", 0)

            new.write(settings)
            batch: list[tuple[str, DocRecord, list[tuple[int, bytes, bytes]]]] = []
            kept = top = 0
            for doc_id, doc in rec.scan_docs(txn, []):
                if doc_id in bad:
                    continue
                rows = [(cid, _present(txn.get(u64(cid), db=rec.chunks)), _present(txn.get(u64(cid), db=rec.vectors)))
                        for cid in doc.chunk_ids]
                batch.append((doc_id, doc, rows))
                kept += 1
                top = max(top, doc.first_chunk + doc.n_chunks)
                if len(batch) >= SALVAGE_BATCH:
                    new.write(lambda wtxn, b=batch: _put_docs(new, wtxn, b))  # type: ignore[misc]
                    batch = []
            new.write(lambda wtxn: _put_docs(new, wtxn, batch))
        # ids only grow: past every id the damaged store may have handed out
        new.write(lambda wtxn: new.put_meta(wtxn, "next_chunk", max(top, nxt, 1)))
        return kept

    # ------------------------------------------------------------------ compact
    def compact(self) -> CompactResult:
        """Rebuild the index without tombstones; rewrite the LMDB file if no one else has it open."""
        rec = self.records
        before = rec.file_bytes() + self.index.file_bytes()
        with rec.read() as txn:
            tomb = rec.counts(txn).tombstones
            self.sync.rebuild(txn)
        upto = self.index.save_checkpoint()

        def reset(txn: lmdb.Transaction) -> None:
            rec.trim_log(txn, upto)
            rec.put_meta(txn, "tombstones", 0)

        rec.write(reset)
        self.sync.since_checkpoint = 0
        self._rebuild_lexical()  # postings in full blocks again (writes leave many small ones)
        lmdb_done = self._compact_lmdb()
        after = rec.file_bytes() + self.index.file_bytes()
        return CompactResult(bytes_before=before, bytes_after=after, tombstones_removed=tomb, lmdb_compacted=lmdb_done)

    def _compact_lmdb(self) -> bool:
        with self.locks.exclusive() as alone:
            if not alone:
                return False  # its free pages are reused by later writes instead
            tmpdir = os.path.join(self.path, COMPACT_TMP)
            tmpfile = os.path.join(tmpdir, "data.mdb")
            try:
                os.makedirs(tmpdir, exist_ok=True)
                if os.path.exists(tmpfile):
                    os.unlink(tmpfile)
                self.records.env.copy(tmpdir, compact=True)
                fsync_path(tmpfile)
            except (OSError, lmdb.Error) as e:
                # the copy did not fit (a full disk): the store's own file is untouched
                shutil.rmtree(tmpdir, ignore_errors=True)
                err = storage_error(e, self.path, "writing the compacted copy of the LMDB file",
                                    lost="the store is unchanged (its index was rebuilt); nothing was lost")
                if err is None:
                    raise
                raise err from None
            os.replace(tmpfile, os.path.join(self.path, "data.mdb"))
            fsync_path(self.path)
            os.rmdir(tmpdir)
            self.records.reopen()  # no one else has the store open: we hold open.lock exclusively
            return True


def remove_compaction_leftovers(path: str) -> None:
    """Called by a writer when it takes the lock: a leftover is from a compaction that was killed."""
    shutil.rmtree(os.path.join(path, COMPACT_TMP), ignore_errors=True)
    shutil.rmtree(os.path.join(path, SALVAGE_TMP), ignore_errors=True)


RECALL_SAMPLE = 64  # vectors searched per shard by check()
RECALL_FLOOR = 0.5  # a sound shard measured at 0.98-1.0; below this the graph is broken, not merely approximate


@dataclass
class _Scan:
    """What check() read: the totals of the sound documents, and what is damaged."""

    n_docs: int = 0
    n_chunks: int = 0
    n_tokens: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    expected: dict[str, list[np.ndarray]] = field(default_factory=dict)  # source -> chunk ids
    problems: list[str] = field(default_factory=list)  # inconsistent records
    damage: list[str] = field(default_factory=list)  # unreadable records and pages
    bad_docs: dict[str, str] = field(default_factory=dict)  # doc id -> what is wrong


SALVAGE_BATCH = 1000  # documents copied per write transaction by a salvage


def _put_docs(
    new: Records, txn: lmdb.Transaction, batch: list[tuple[str, DocRecord, list[tuple[int, bytes, bytes]]]]
) -> None:
    for doc_id, doc, rows in batch:
        new.put_doc(txn, doc_id, doc)
        for cid, chunk, vector in rows:
            txn.put(u64(cid), chunk, db=new.chunks)
            txn.put(u64(cid), vector, db=new.vectors)
        new.add_source_count(txn, doc.source, doc.n_chunks)
        new.add_counts(txn, documents=1, chunks=doc.n_chunks, tokens=doc.n_tokens)


def _present(value: Any) -> bytes:
    # check() found every record of a sound document, and nothing writes while we hold the store alone
    if value is None:
        raise CorruptStoreError("a record vanished during the salvage; nothing was replaced: run it again")
    return bytes(value)


def _tokenizer_hash(tok: str) -> str:
    return hashlib.sha256(tok.encode()).hexdigest()[:16]  # as Chunker.tokenizer_hash


def _safe(fn: Callable[[], T]) -> T | None:
    """``fn()``, or None if it met damage."""
    try:
        return fn()
    except (lmdb.Error, DamagedRecordError) as e:
        if not is_damage(e):
            raise
        return None


def _table_damage(txn: lmdb.Transaction, db: Any, name: str, decode: Callable[[Any], Any]) -> list[str]:
    """Each record of a small table that does not decode (a damaged page ends the walk)."""
    out = []
    cur = txn.cursor(db=db)
    try:
        positioned = cur.first()
        while positioned:
            key = bytes(cur.key())
            try:
                decode(cur.value())
            except DamagedRecordError as e:
                out.append(f"{name} record {key[:40]!r}: damaged ({e})")
            positioned = cur.next()
    except lmdb.Error as e:
        if not is_damage(e):
            raise
        out.append(f"{name} table: a page is unreadable ({type(e).__name__}: {e})")
    return out
