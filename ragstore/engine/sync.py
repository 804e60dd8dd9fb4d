"""Keeping the derived vector index in step with LMDB, the system of record.

Every write transaction appends an entry to LMDB's change log. The index
applies the entries after the commit (``catch_up``); on open it loads its last
checkpoint and replays what LMDB committed after it; when the log no longer
covers its state (trimmed past it by a newer checkpoint of another process, or
no checkpoint at all) it loads the newest checkpoint, else rebuilds from the
records. A checkpoint saves the index atomically, then trims the log it covers.
So an acknowledged write is never lost, whatever happens to the index files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import lmdb
import numpy as np

from ..errors import CheckpointWarning, DamagedRecordError, StorageError
from .damage import DocDamage, is_damage
from .index import IndexDamageWarning, VectorIndex
from .records import ADD, Records

__all__ = ["IndexSync"]

REBUILD_BATCH = 65_536  # vectors added to a shard at once while rebuilding


class IndexSync:
    """Applies LMDB's change log to ``index``; saves checkpoints.

    ``vector_dtype``/``dim`` read the vector copies in LMDB. ``checkpoint_every``
    chunks applied since the last checkpoint make :meth:`due` true. The caller
    serializes calls (the store's mutex).
    """

    def __init__(
        self,
        records: Records,
        index: VectorIndex,
        *,
        vector_dtype: np.dtype,
        dim: int,
        checkpoint_every: int,
    ) -> None:
        self.records = records
        self.index = index
        self.vector_dtype = vector_dtype
        self.dim = dim
        self.checkpoint_every = checkpoint_every
        self.since_checkpoint = 0  # chunks applied since the last checkpoint

    @property
    def due(self) -> bool:
        return self.since_checkpoint >= self.checkpoint_every

    def open(self) -> int:
        """Load the last checkpoint and apply what came after; returns chunks applied."""
        loaded = self.index.load_checkpoint()
        with self.records.read() as txn:
            return self.catch_up(txn, loaded=loaded)

    def catch_up(self, txn: lmdb.Transaction, loaded: bool = True) -> int:
        """Apply what LMDB committed after the index's state; returns chunks applied."""
        ix, rec = self.index, self.records
        if loaded and ix.applied_seq == rec.seq(txn):
            return 0
        if loaded and rec.log_covers(txn, ix.applied_seq):
            return self._replay(txn)
        # The log was trimmed past our state (a newer checkpoint exists) or we have
        # no checkpoint yet: load the newest checkpoint, else rebuild from the records.
        if ix.load_checkpoint() and rec.log_covers(txn, ix.applied_seq):
            return self._replay(txn)
        return self.rebuild(txn)

    def _replay(self, txn: lmdb.Transaction) -> int:
        try:
            return self._replay_log(txn)
        except (lmdb.Error, DamagedRecordError) as e:
            if not is_damage(e):
                raise
            # A damaged log entry or vector: the index cannot follow the log, so it is
            # rebuilt from the documents that are readable (check() lists the others).
            return self.rebuild(txn)

    def _replay_log(self, txn: lmdb.Transaction) -> int:
        ix, rec = self.index, self.records
        n = 0
        for seq, ops in rec.log_since(txn, ix.applied_seq):
            for op in ops:
                if op.op == ADD:
                    found, vecs = rec.vectors_of(txn, op.keys.tolist(), self.vector_dtype, self.dim)
                    if len(found) != op.n_chunks:
                        continue  # deleted later in the log
                    ix.add(op.source, op.keys, vecs)
                    n += op.n_chunks
                else:
                    ix.remove(op.source, op.keys)
            ix.applied(seq)
        ix.applied(rec.seq(txn))
        self.since_checkpoint += n
        return n

    def rebuild(self, txn: lmdb.Transaction, on_progress: Callable[[int], None] | None = None) -> int:
        """Build the index anew from every document's vectors in LMDB."""
        ix, rec = self.index, self.records
        ix.reset()
        pending: dict[str, tuple[list, list]] = {}
        total = 0

        def flush(source: str) -> None:
            ks, vs = pending.pop(source)
            ix.add(source, np.concatenate(ks), np.concatenate(vs))

        damaged: list[DocDamage] = []
        for _, doc in rec.scan_docs(txn, damaged):
            try:
                vecs = rec.doc_vectors(txn, doc, self.vector_dtype, self.dim)
            except (lmdb.Error, DamagedRecordError) as e:
                if not is_damage(e):
                    raise
                vecs = None
            if vecs is None:
                continue  # reported by check()
            ks, vs = pending.setdefault(doc.source, ([], []))
            ks.append(np.arange(doc.first_chunk, doc.first_chunk + len(vecs), dtype=np.uint64))
            vs.append(vecs)
            total += len(vecs)
            if sum(len(k) for k in ks) >= REBUILD_BATCH:
                flush(doc.source)
                if on_progress is not None:
                    on_progress(total)
        for source in list(pending):
            flush(source)
        if damaged:
            # Opening must still work, so that `check` can list the damage and `check --fix` salvage.
            warnings.warn(f"the store at {rec.path} has damaged records ({damaged[0].where}: {damaged[0].error}"
                          f"{f'; {len(damaged) - 1} more' if len(damaged) > 1 else ''}); the index holds the "
                          f"readable documents only. Run `ragstore check {rec.path}` to list the damage",
                          IndexDamageWarning, stacklevel=2)
        ix.applied(rec.seq(txn))
        self.since_checkpoint += total
        return total

    def refresh(self) -> int:
        """Apply what other processes committed since the last look."""
        with self.records.read() as txn:
            return self.catch_up(txn)

    def checkpoint(self, *, force: bool = False) -> bool:
        """Save the index (if it changed) and trim the log it covers; True if saved."""
        self.refresh()
        if not force and not self.index.needs_checkpoint:
            return False
        upto = self.index.save_checkpoint()
        self.records.write(lambda txn: self.records.trim_log(txn, upto))
        self.since_checkpoint = 0
        return True

    def after_write(self) -> None:
        """Apply a commit just made; save a checkpoint when enough has been applied.

        The write is committed (acknowledged) already: a checkpoint that fails
        (a full disk) only warns, and is tried again ``checkpoint_every``
        chunks later.
        """
        self.refresh()
        if self.due:
            self.checkpoint_or_warn()

    def checkpoint_or_warn(self) -> bool:
        """:meth:`checkpoint`, a failure to save it a :class:`CheckpointWarning` (the index is derived)."""
        try:
            return self.checkpoint()
        except StorageError as e:
            self.since_checkpoint = 0  # not again at every write: after checkpoint_every more chunks
            warnings.warn(f"{e}", CheckpointWarning, stacklevel=3)
            return False
