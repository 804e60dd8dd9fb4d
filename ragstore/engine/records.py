"""The system of record: documents, chunks, vectors and the change log in LMDB.

Named sub-databases, msgpack values:

- ``meta``:    config, counters, the change-log sequence, the tokenizer JSON;
- ``docs``:    doc id (UTF-8) -> {s: source, m: meta, c0: first chunk id, n: chunks,
               t: tokens, h: content hash, tail: text after the last chunk};
- ``chunks``:  chunk id (u64 big-endian) -> [doc id, position, text, start, end,
               tokens, pre];
- ``vectors``: chunk id (u64 big-endian) -> the chunk's vector, raw bytes (one
               record per chunk: a query re-scores its candidates with one
               ``getmulti``; ids only grow, so writes append);
- ``sources``: source name -> live chunk count;
- ``log``:     sequence number -> [[op, source, first chunk id, count], ...], one
               entry per write transaction; the vector index replays it.

Chunk ids are allocated from a counter and never reused, so a chunk id that
was deleted can never come back as another chunk.
"""

from __future__ import annotations

import os
import struct
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import lmdb
import msgpack

from ..errors import CorruptStoreError, RagstoreError, StoreLockedError

__all__ = ["Records", "ADD", "DEL", "u64", "from_u64"]

T = TypeVar("T")

ADD, DEL = 1, 2
_U64 = struct.Struct(">Q")
# On 64-bit systems a large map costs address space only; the file grows as data does.
DEFAULT_MAP_SIZE = 1 << 40
_DBS = ("meta", "docs", "chunks", "vectors", "sources", "log")


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


_OPEN: dict[str, "Records"] = {}
_OPEN_LOCK = threading.Lock()


class Records:
    """Thin wrapper over an LMDB environment with map growth handled.

    LMDB allows one environment per file in a process, so Store objects on the
    same path share one through :meth:`acquire` / :meth:`release`.
    """

    @classmethod
    def acquire(cls, path: str, *, sync: bool, map_size: int | None) -> "Records":
        key = os.path.realpath(path)
        with _OPEN_LOCK:
            rec = _OPEN.get(key)
            if rec is None:
                readonly = not os.access(path, os.W_OK)
                rec = _OPEN[key] = cls(path, readonly=readonly, sync=sync, map_size=map_size)
            rec.refs += 1
            return rec

    def release(self) -> None:
        with _OPEN_LOCK:
            self.refs -= 1
            if self.refs <= 0:
                _OPEN.pop(os.path.realpath(self.path), None)
                self.env.close()

    def reopen(self) -> None:
        """Reopen the environment after its file was replaced (compaction)."""
        map_size = self.env.info()["map_size"]
        self.env.close()
        self.__init__(self.path, readonly=self.readonly, sync=self.sync, map_size=map_size, refs=self.refs)

    def __init__(self, path: str, *, readonly: bool, sync: bool, map_size: int | None, refs: int = 0) -> None:
        self.path = path
        self.readonly = readonly
        self.sync = sync
        self.refs = refs
        try:
            self.env = lmdb.open(
                path,
                subdir=True,
                create=not readonly,
                readonly=readonly,
                max_dbs=len(_DBS),
                map_size=map_size or DEFAULT_MAP_SIZE,
                sync=sync,
                metasync=sync,
                readahead=False,  # random access over a large file: readahead only pollutes the page cache
                max_readers=512,
                lock=True,
            )
        except lmdb.LockError as e:
            raise StoreLockedError(f"cannot lock the store's LMDB files at {path}: {e}") from None
        except lmdb.Error as e:
            raise CorruptStoreError(
                f"cannot open the LMDB database at {path}: {e}. If the files were copied while a "
                "writer was running, restore a good copy."
            ) from None
        txn_dbs = {}
        for name in _DBS:
            # open_db without a txn: handles opened in an explicit read txn are
            # dropped when it ends (LMDB semantics), which breaks readonly stores.
            try:
                txn_dbs[name] = self.env.open_db(name.encode(), create=not readonly)
            except lmdb.NotFoundError:
                self.env.close()
                raise CorruptStoreError(
                    f"{path} is an LMDB database but not a ragstore store (no {name!r} table)"
                ) from None
        self.meta = txn_dbs["meta"]
        self.docs = txn_dbs["docs"]
        self.chunks = txn_dbs["chunks"]
        self.vectors = txn_dbs["vectors"]
        self.sources = txn_dbs["sources"]
        self.log = txn_dbs["log"]

    # -- transactions ----------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A consistent read snapshot; values are zero-copy buffers (valid inside only)."""
        for _ in range(3):
            try:
                txn = self.env.begin(buffers=True)
                break
            except lmdb.MapResizedError:
                # another process grew the map beyond ours: adopt its size
                self.env.set_mapsize(0)
        else:  # pragma: no cover - needs three concurrent resizes
            raise RagstoreError("the store's map kept growing while opening a read transaction; retry")
        try:
            yield txn
        finally:
            txn.abort()

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in a write transaction, commit durably, grow the map if full.

        ``fn`` may run more than once (after MapFullError), so it must only
        write into the transaction.
        """
        while True:
            try:
                txn = self.env.begin(write=True)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
                continue
            try:
                result = fn(txn)
                txn.commit()
                return result
            except lmdb.MapFullError:
                txn.abort()
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except BaseException:
                txn.abort()
                raise

    # -- helpers ---------------------------------------------------------
    def get_meta(self, txn: lmdb.Transaction, key: str, default: Any = None) -> Any:
        v = txn.get(key.encode(), db=self.meta)
        return default if v is None else unpack(v)

    def put_meta(self, txn: lmdb.Transaction, key: str, value: Any) -> None:
        txn.put(key.encode(), pack(value), db=self.meta)

    def get_doc(self, txn: lmdb.Transaction, doc_id: str) -> dict | None:
        v = txn.get(doc_id.encode(), db=self.docs)
        return None if v is None else unpack(v)

    def get_chunk(self, txn: lmdb.Transaction, chunk_id: int) -> list | None:
        v = txn.get(u64(chunk_id), db=self.chunks)
        return None if v is None else unpack(v)

    def read_vectors(self, txn: lmdb.Transaction, keys: list[int]) -> tuple[list[int], list]:
        """(ids found, raw rows) for chunk ids; deleted ids are skipped."""
        pairs = txn.cursor(db=self.vectors).getmulti([u64(k) for k in keys])
        return [from_u64(bytes(k)) for k, _ in pairs], [v for _, v in pairs]

    def seq(self, txn: lmdb.Transaction) -> int:
        return self.get_meta(txn, "seq", 0)

    def append_log(self, txn: lmdb.Transaction, ops: list[list]) -> int:
        seq = self.seq(txn) + 1
        txn.put(u64(seq), pack(ops), db=self.log)
        self.put_meta(txn, "seq", seq)
        return seq

    def log_since(self, txn: lmdb.Transaction, seq: int) -> Iterator[tuple[int, list]]:
        cur = txn.cursor(db=self.log)
        if not cur.set_range(u64(seq + 1)):
            return
        for k, v in cur:
            yield from_u64(bytes(k)), unpack(v)

    def first_log_seq(self, txn: lmdb.Transaction) -> int | None:
        cur = txn.cursor(db=self.log)
        return from_u64(bytes(cur.key())) if cur.first() else None

    def trim_log(self, txn: lmdb.Transaction, upto: int) -> int:
        cur = txn.cursor(db=self.log)
        n = 0
        # delete() moves the cursor to the next record; it is unpositioned at the end
        positioned = cur.first()
        while positioned and from_u64(bytes(cur.key())) <= upto:
            cur.delete()
            n += 1
            positioned = bool(cur.key())
        return n

    def add_counter(self, txn: lmdb.Transaction, key: str, delta: int) -> None:
        self.put_meta(txn, key, self.get_meta(txn, key, 0) + delta)

    def add_source_count(self, txn: lmdb.Transaction, source: str, delta: int) -> None:
        k = b"s" + source.encode()  # prefixed: LMDB refuses the empty key of "no source"
        v = txn.get(k, db=self.sources)
        n = (0 if v is None else unpack(v)) + delta
        if n > 0:
            txn.put(k, pack(n), db=self.sources)
        else:
            txn.delete(k, db=self.sources)

    def source_counts(self, txn: lmdb.Transaction) -> dict[str, int]:
        return {bytes(k)[1:].decode(): unpack(v) for k, v in txn.cursor(db=self.sources)}

    def file_bytes(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.path, "data.mdb"))
        except OSError:
            return 0
