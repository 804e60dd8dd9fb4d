"""Upkeep of a store: counts and sizes, consistency checks and repair, compaction."""

from __future__ import annotations

import os
import shutil

import lmdb
import numpy as np

from ..config import StoreConfig
from ..types import CheckReport, CompactResult, Stats
from .index import VectorIndex, fsync_path
from .locks import StoreLocks
from .records import Records
from .sync import IndexSync

__all__ = ["Maintenance", "COMPACT_TMP", "remove_compaction_leftovers"]

COMPACT_TMP = "compact.tmp"


class Maintenance:
    """``stats``, ``check(fix)`` and ``compact`` over the store's parts; the caller holds its mutex."""

    def __init__(
        self, path: str, config: StoreConfig, records: Records, index: VectorIndex, sync: IndexSync, locks: StoreLocks
    ) -> None:
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
        """Records against each other and the index against the records; ``fix`` rebuilds what is derived."""
        problems: list[str] = []
        derived: list[str] = []  # problems a rebuild of derived state mends
        rec = self.records
        cfg = self.config
        row_bytes = cfg.dim * cfg.vector_numpy_dtype.itemsize
        with rec.read() as txn:
            self.sync.catch_up(txn)
            expected: dict[str, list[np.ndarray]] = {}
            n_docs = n_chunks = n_tokens = 0
            per_source: dict[str, int] = {}
            for doc_id, doc in rec.iter_docs(txn):
                n_docs += 1
                n_chunks += doc.n_chunks
                n_tokens += doc.n_tokens
                per_source[doc.source] = per_source.get(doc.source, 0) + doc.n_chunks
                found, rows = rec.read_vectors(txn, list(doc.chunk_ids))
                if len(found) != doc.n_chunks or any(len(r) != row_bytes for r in rows):
                    problems.append(f"document {doc_id!r}: vectors missing or of the wrong size")
                chunks = rec.get_chunks(txn, doc.chunk_ids)
                for pos, cid in enumerate(doc.chunk_ids):
                    c = chunks.get(cid)
                    if c is None or c.doc_id != doc_id or c.position != pos:
                        problems.append(f"document {doc_id!r}: chunk {pos} missing or misfiled")
                        break
                ids = np.arange(doc.first_chunk, doc.first_chunk + doc.n_chunks, dtype=np.uint64)
                expected.setdefault(doc.source, []).append(ids)
            problems += self._orphans(txn, n_chunks)
            counts = rec.counts(txn)
            for key, have, actual in (("n_docs", counts.documents, n_docs), ("n_chunks", counts.chunks, n_chunks),
                                      ("n_tokens", counts.tokens, n_tokens)):
                if have != actual:
                    derived.append(f"counter {key} is {have}, records say {actual}")
            if rec.source_counts(txn) != per_source:
                derived.append("per-source chunk counts disagree with the records")
            derived += self._index_problems(expected)
        fixed = False
        if fix and derived:
            self._fix_derived(n_docs, n_chunks, n_tokens, per_source)
            fixed = True
        ok = not problems and (not derived or fixed)
        return CheckReport(ok=ok, problems=problems + derived, fixed=fixed, documents=n_docs, chunks=n_chunks)

    def _orphans(self, txn: lmdb.Transaction, n_chunks: int) -> list[str]:
        out = []
        for table in ("chunks", "vectors"):
            entries = self.records.table_entries(txn, table)
            if entries != n_chunks:
                out.append(f"{entries - n_chunks} {table[:-1]} records belong to no document")
        return out

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

    def _fix_derived(self, n_docs: int, n_chunks: int, n_tokens: int, per_source: dict[str, int]) -> None:
        rec = self.records

        def write(txn: lmdb.Transaction) -> None:
            rec.set_counts(txn, documents=n_docs, chunks=n_chunks, tokens=n_tokens)
            rec.set_source_counts(txn, per_source)

        rec.write(write)
        with rec.read() as txn:
            self.sync.rebuild(txn)
        self.index.save_checkpoint()
        self.sync.since_checkpoint = 0

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
        lmdb_done = self._compact_lmdb()
        after = rec.file_bytes() + self.index.file_bytes()
        return CompactResult(bytes_before=before, bytes_after=after, tombstones_removed=tomb, lmdb_compacted=lmdb_done)

    def _compact_lmdb(self) -> bool:
        with self.locks.exclusive() as alone:
            if not alone:
                return False  # its free pages are reused by later writes instead
            tmpdir = os.path.join(self.path, COMPACT_TMP)
            os.makedirs(tmpdir, exist_ok=True)
            tmpfile = os.path.join(tmpdir, "data.mdb")
            if os.path.exists(tmpfile):
                os.unlink(tmpfile)
            self.records.env.copy(tmpdir, compact=True)
            fsync_path(tmpfile)
            os.replace(tmpfile, os.path.join(self.path, "data.mdb"))
            fsync_path(self.path)
            os.rmdir(tmpdir)
            self.records.reopen()  # no one else has the store open: we hold open.lock exclusively
            return True


def remove_compaction_leftovers(path: str) -> None:
    """Called by a writer when it takes the lock: a leftover is from a compaction that was killed."""
    shutil.rmtree(os.path.join(path, COMPACT_TMP), ignore_errors=True)
