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

import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import lmdb
import numpy as np

from ..errors import (
    CorruptStoreError,
    DamagedRecordError,
    InvalidInputError,
    NotFoundError,
    RagstoreError,
    StoreLockedError,
    StoreNotWritableError,
)
from .codecs import ADD, DEL, ChunkRecord, Counts, DocRecord, LogOp, decode_chunk, from_u64, pack, u64, unpack
from .damage import DocDamage, check_file_length, damage_guard, is_damage, key_str
from .storage import READONLY_ERRNOS, storage_error

__all__ = [
    "Records",
    "DocRecord",
    "ChunkRecord",
    "decode_chunk",
    "LogOp",
    "Counts",
    "ADD",
    "DEL",
    "u64",
    "from_u64",
    "pack",
    "unpack",
    "prepare_folder",
]

T = TypeVar("T")

# On 64-bit systems a large map costs address space only; the file grows as data does.
DEFAULT_MAP_SIZE = 1 << 40
_DBS = ("meta", "docs", "chunks", "vectors", "sources", "log")
# the lexical index's tables (engine/lexical.py): made with a lexical index only, so
# stores made before it (and stores made without it) stay as they were
_LEX_DBS = ("lex_post",)


NOT_COMMITTED = "this write was not committed; nothing acknowledged was lost"

_OPEN: dict[str, Records] = {}
_OPEN_LOCK = threading.Lock()


class Records:
    """Thin wrapper over an LMDB environment with map growth handled.

    LMDB allows one environment per file in a process, so Store objects on the
    same path share one through :meth:`acquire` / :meth:`release`.
    """

    @classmethod
    def acquire(cls, path: str, *, sync: bool, map_size: int | None) -> Records:
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
        self._open(map_size)

    def __init__(self, path: str, *, readonly: bool, sync: bool, map_size: int | None, refs: int = 0) -> None:
        self.path = path
        self.readonly = readonly
        self.sync = sync
        self.refs = refs
        self._open(map_size)

    def _open(self, map_size: int | None) -> None:
        path, readonly, sync = self.path, self.readonly, self.sync

        def env(lock: bool) -> lmdb.Environment:
            return lmdb.open(
                path,
                subdir=True,
                create=not readonly,
                readonly=readonly,
                max_dbs=len(_DBS) + len(_LEX_DBS),
                map_size=map_size or DEFAULT_MAP_SIZE,
                sync=sync,
                metasync=sync,
                readahead=False,  # random access over a large file: readahead only pollutes the page cache
                max_readers=512,
                lock=lock,
            )

        try:
            try:
                self.env = env(lock=True)
            except lmdb.Error as e:
                if not (readonly and _errno_in(e, READONLY_ERRNOS)):
                    raise
                # A store this user may only read (read-only media, files shared read-only):
                # LMDB readers write their slot in lock.mdb, which cannot be opened for
                # writing here, so read without LMDB's locks (docs/durability.md: no one
                # may write the store meanwhile).
                self.env = env(lock=False)
        except lmdb.LockError as e:
            raise StoreLockedError(f"cannot lock the store's LMDB files at {path}: {e}") from None
        except lmdb.Error as e:
            err = storage_error(e, path, "opening the store", lost="nothing was changed")
            if err is not None:
                raise err from None
            if readonly and not os.path.exists(os.path.join(path, "data.mdb")):
                raise StoreNotWritableError(
                    f"cannot create a store in {path}: the folder is not writable by this user or is on a "
                    "read-only file system; choose a folder you can write"
                ) from None
            raise CorruptStoreError(
                f"cannot open the LMDB database at {path}: {e}. If the files were copied while a "
                "writer was running, restore a good copy."
            ) from None
        try:
            check_file_length(self.env, path)
        except CorruptStoreError:
            self.env.close()
            raise
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
            except lmdb.Error as e:
                self.env.close()
                if not is_damage(e):
                    raise
                # the pages that locate the tables are damaged: no record can be found
                raise CorruptStoreError(
                    f"the LMDB file of the store at {path} is damaged where its tables are located ({e}): "
                    "nothing in it can be read; restore a backup"
                ) from None
        self.meta = txn_dbs["meta"]
        self.docs = txn_dbs["docs"]
        self.chunks = txn_dbs["chunks"]
        self.vectors = txn_dbs["vectors"]
        self.sources = txn_dbs["sources"]
        self.log = txn_dbs["log"]
        self.lex_post: Any = None
        self.open_lexical_tables()

    def open_lexical_tables(self) -> bool:
        """Open the lexical tables if the file has them (another process may have made them since)."""
        if self.lex_post is None:
            try:
                self.lex_post = self.env.open_db(_LEX_DBS[0].encode(), create=False)
            except lmdb.NotFoundError:
                return False
        return True

    def ensure_lexical_tables(self) -> None:
        """Make the lexical tables (a write of their own: call outside any transaction)."""
        if self.lex_post is None:
            self.lex_post = self.env.open_db(_LEX_DBS[0].encode(), create=True)

    # -- transactions ----------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A consistent read snapshot; values are zero-copy buffers (valid inside only).

        Damage met inside (an unreadable page, an undecodable record) leaves as
        :class:`CorruptStoreError` saying what to do, whichever read path met it.
        """
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
            with damage_guard(self.path):
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
            except (lmdb.Error, OSError) as e:
                txn.abort()
                # a full disk, a read-only file system: said as such, not as a raw lmdb error
                err = storage_error(e, self.path, "committing a write", lost=NOT_COMMITTED)
                if err is None:
                    raise
                raise err from None
            except BaseException:
                txn.abort()
                raise

    # -- meta ------------------------------------------------------------
    def get_meta(self, txn: lmdb.Transaction, key: str, default: Any = None) -> Any:
        v = txn.get(key.encode(), db=self.meta)
        if v is None:
            return default
        try:
            return unpack(v)
        except DamagedRecordError as e:
            if key == "config":  # without it nothing can be read, checked or salvaged
                raise CorruptStoreError(f"the configuration record of the store at {self.path} is damaged ({e}): "
                                        "its records cannot be interpreted without it; restore a backup") from None
            raise DamagedRecordError(f"meta record {key!r}: {e}") from None

    def put_meta(self, txn: lmdb.Transaction, key: str, value: Any) -> None:
        txn.put(key.encode(), pack(value), db=self.meta)

    def add_counter(self, txn: lmdb.Transaction, key: str, delta: int) -> None:
        self.put_meta(txn, key, self.get_meta(txn, key, 0) + delta)

    def counts(self, txn: lmdb.Transaction) -> Counts:
        g = self.get_meta
        return Counts(g(txn, "n_docs", 0), g(txn, "n_chunks", 0), g(txn, "n_tokens", 0), g(txn, "tombstones", 0))

    def add_counts(self, txn: lmdb.Transaction, *, documents: int, chunks: int, tokens: int) -> None:
        self.add_counter(txn, "n_docs", documents)
        self.add_counter(txn, "n_chunks", chunks)
        self.add_counter(txn, "n_tokens", tokens)

    def set_counts(self, txn: lmdb.Transaction, *, documents: int, chunks: int, tokens: int) -> None:
        self.put_meta(txn, "n_docs", documents)
        self.put_meta(txn, "n_chunks", chunks)
        self.put_meta(txn, "n_tokens", tokens)

    # -- documents -------------------------------------------------------
    def get_doc(self, txn: lmdb.Transaction, doc_id: str) -> DocRecord | None:
        v = txn.get(doc_id.encode(), db=self.docs)
        return None if v is None else DocRecord.decode(v)

    def has_doc(self, txn: lmdb.Transaction, doc_id: str) -> bool:
        return txn.get(doc_id.encode(), db=self.docs) is not None

    def put_doc(self, txn: lmdb.Transaction, doc_id: str, doc: DocRecord) -> None:
        txn.put(doc_id.encode(), doc.encode(), db=self.docs)

    def get_docs(self, txn: lmdb.Transaction, doc_ids: Iterable[str]) -> dict[str, DocRecord]:
        """The records of several documents in one LMDB call; missing ids are absent."""
        keys = sorted({d.encode() for d in doc_ids})
        return {key_str(k): DocRecord.decode(v) for k, v in txn.cursor(db=self.docs).getmulti(keys)}

    def iter_docs(self, txn: lmdb.Transaction) -> Iterator[tuple[str, DocRecord]]:
        for k, v in txn.cursor(db=self.docs):
            yield key_str(k), DocRecord.decode(v)

    def scan_docs(self, txn: lmdb.Transaction, damaged: list[DocDamage]) -> Iterator[tuple[str, DocRecord]]:
        """Every readable document; each damaged record (or page) goes to ``damaged`` instead.

        For ``check``, rebuilds and salvage: one bad record must not hide the
        others. A damaged page stops the walk (what lies beyond it cannot be
        reached from the cursor); the walk resumes after it if LMDB can seek there.
        """
        cur = txn.cursor(db=self.docs)
        last: bytes | None = None
        try:
            positioned = cur.first()
        except lmdb.Error as e:
            if not is_damage(e):
                raise
            damaged.append(DocDamage("docs table", f"unreadable ({type(e).__name__}: {e})", None))
            return
        while positioned:
            try:
                k = bytes(cur.key())
                raw = cur.value()
            except lmdb.Error as e:
                if not is_damage(e):
                    raise
                damaged.append(DocDamage(f"docs table after {last!r}", f"{type(e).__name__}: {e}", None))
                return
            last = k
            try:
                doc_id = key_str(k)
            except DamagedRecordError as e:
                damaged.append(DocDamage(f"document key {k[:40]!r}", str(e), None))
            else:
                try:
                    doc = DocRecord.decode(raw)
                except DamagedRecordError as e:
                    damaged.append(DocDamage(f"document {doc_id!r}", str(e), doc_id))
                else:
                    yield doc_id, doc
            try:
                positioned = cur.next()
            except lmdb.Error as e:
                if not is_damage(e):
                    raise
                damaged.append(DocDamage(f"docs table after {k[:40]!r}",
                                         f"a page is unreadable ({type(e).__name__}: {e}); the documents "
                                         "stored beyond it cannot be read", None))
                return

    # -- chunks ----------------------------------------------------------
    def get_chunk(self, txn: lmdb.Transaction, chunk_id: int) -> ChunkRecord | None:
        v = txn.get(u64(chunk_id), db=self.chunks)
        return None if v is None else ChunkRecord.decode(v)

    def get_chunks(self, txn: lmdb.Transaction, chunk_ids: Iterable[int]) -> dict[int, ChunkRecord]:
        """The records of several chunks in one LMDB call; deleted ids are absent."""
        keys = [u64(x) for x in sorted(set(chunk_ids))]
        return {from_u64(k): ChunkRecord.decode(v) for k, v in txn.cursor(db=self.chunks).getmulti(keys)}

    def doc_chunks(self, txn: lmdb.Transaction, doc_id: str, doc: DocRecord) -> list[ChunkRecord]:
        """A document's chunk records in order; a missing or misfiled one is damage."""
        chunks = self.get_chunks(txn, doc.chunk_ids)
        out = [chunks.get(cid) for cid in doc.chunk_ids]
        for pos, c in enumerate(out):
            if c is None or c.doc_id != doc_id or c.position != pos:
                raise DamagedRecordError(f"chunk {pos} of document {doc_id!r} is missing or misfiled")
        return out  # type: ignore[return-value]

    def get_raw_chunks(self, txn: lmdb.Transaction, chunk_ids: Iterable[int]) -> dict[int, Any]:
        """Encoded records of several chunks in one LMDB call, as buffers valid inside ``txn``
        (decode with ChunkRecord.decode: a query decodes only those it keeps)."""
        keys = [u64(x) for x in sorted(set(chunk_ids))]
        return {from_u64(k): v for k, v in txn.cursor(db=self.chunks).getmulti(keys)}

    def append_chunks(self, txn: lmdb.Transaction, first: int, chunks: list[ChunkRecord], rows: np.ndarray) -> None:
        """Chunk records and their vectors under ids ``first ..``; ids only grow, so both append."""
        txn.cursor(db=self.chunks).putmulti(
            [(u64(first + j), c.encode()) for j, c in enumerate(chunks)], append=True
        )
        txn.cursor(db=self.vectors).putmulti(
            [(u64(first + j), rows[j].tobytes()) for j in range(len(chunks))], append=True
        )

    def delete_doc(self, txn: lmdb.Transaction, doc_id: str, doc: DocRecord) -> None:
        """A document's record, chunks and vectors; the live counts are the caller's."""
        for cid in doc.chunk_ids:
            txn.delete(u64(cid), db=self.chunks)
            txn.delete(u64(cid), db=self.vectors)
        txn.delete(doc_id.encode(), db=self.docs)
        self.add_source_count(txn, doc.source, -doc.n_chunks)
        self.add_counter(txn, "tombstones", doc.n_chunks)

    def next_chunk_id(self, txn: lmdb.Transaction) -> int:
        return self.get_meta(txn, "next_chunk", 1)  # 0 marks "no result" in searches

    # -- vectors ---------------------------------------------------------
    def read_vectors(self, txn: lmdb.Transaction, keys: list[int]) -> tuple[list[int], list]:
        """(ids found, raw rows) for chunk ids; deleted ids are skipped."""
        pairs = txn.cursor(db=self.vectors).getmulti([u64(k) for k in keys])
        return [from_u64(bytes(k)) for k, _ in pairs], [v for _, v in pairs]

    def vectors_of(
        self, txn: lmdb.Transaction, keys: list[int], dtype: np.dtype, dim: int
    ) -> tuple[list[int], np.ndarray]:
        """Float32 vectors of the chunk ids found (deleted ones skipped), in one LMDB call."""
        found, rows = self.read_vectors(txn, keys)
        if not found:
            return [], np.zeros((0, dim), dtype=np.float32)
        row_bytes = dim * np.dtype(dtype).itemsize
        if any(len(r) != row_bytes for r in rows):
            bad = next(k for k, r in zip(found, rows, strict=True) if len(r) != row_bytes)
            raise DamagedRecordError(f"the vector record of chunk {bad} has the wrong length")
        arr = np.frombuffer(b"".join(rows), dtype=dtype).reshape(len(found), dim)
        return found, arr.astype(np.float32, copy=False)

    def doc_vectors(self, txn: lmdb.Transaction, doc: DocRecord, dtype: np.dtype, dim: int) -> np.ndarray | None:
        """A document's vectors in chunk order; None if any is missing (check() reports it)."""
        found, arr = self.vectors_of(txn, list(doc.chunk_ids), dtype, dim)
        return arr if len(found) == doc.n_chunks else None

    # -- change log ------------------------------------------------------
    def seq(self, txn: lmdb.Transaction) -> int:
        return self.get_meta(txn, "seq", 0)

    def append_log(self, txn: lmdb.Transaction, ops: list[LogOp]) -> int:
        seq = self.seq(txn) + 1
        txn.put(u64(seq), pack([list(op) for op in ops]), db=self.log)
        self.put_meta(txn, "seq", seq)
        return seq

    def log_since(self, txn: lmdb.Transaction, seq: int) -> Iterator[tuple[int, list[LogOp]]]:
        cur = txn.cursor(db=self.log)
        if not cur.set_range(u64(seq + 1)):
            return
        for k, v in cur:
            yield from_u64(bytes(k)), LogOp.decode_entry(v)

    def first_log_seq(self, txn: lmdb.Transaction) -> int | None:
        cur = txn.cursor(db=self.log)
        return from_u64(bytes(cur.key())) if cur.first() else None

    def log_covers(self, txn: lmdb.Transaction, applied: int) -> bool:
        """Whether the log still holds every entry after ``applied`` (so replay can catch up)."""
        seq = self.seq(txn)
        if applied > seq:
            return False  # the index holds commits LMDB lost (sync=False and a power cut)
        if applied == seq:
            return True
        first = self.first_log_seq(txn)
        return first is not None and first <= applied + 1

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

    # -- sources ---------------------------------------------------------
    def add_source_count(self, txn: lmdb.Transaction, source: str, delta: int) -> None:
        k = b"s" + source.encode()  # prefixed: LMDB refuses the empty key of "no source"
        v = txn.get(k, db=self.sources)
        n = (0 if v is None else unpack(v)) + delta
        if n > 0:
            txn.put(k, pack(n), db=self.sources)
        else:
            txn.delete(k, db=self.sources)

    def source_counts(self, txn: lmdb.Transaction) -> dict[str, int]:
        return {key_str(bytes(k)[1:]): unpack(v) for k, v in txn.cursor(db=self.sources)}

    def set_source_counts(self, txn: lmdb.Transaction, counts: dict[str, int]) -> None:
        txn.drop(self.sources, delete=False)
        for s, n in counts.items():
            self.add_source_count(txn, s, n)

    def table_entries(self, txn: lmdb.Transaction, table: str) -> int:
        return txn.stat(getattr(self, table))["entries"]

    def file_bytes(self) -> int:
        try:
            return os.path.getsize(os.path.join(self.path, "data.mdb"))
        except OSError:
            return 0


def _errno_in(e: lmdb.Error, codes: frozenset[int]) -> bool:
    return any(str(e).endswith(os.strerror(c)) for c in codes)


def prepare_folder(path: str, *, create: bool) -> None:
    """A new store's folder, made; a path that cannot be one, refused before anything is written."""
    try:
        _prepare_folder(path, create=create)
    except OSError as e:
        if isinstance(e, NotADirectoryError) or e.errno == errno.ENOTDIR:
            raise InvalidInputError(
                f"{path} cannot be a store's folder: a part of that path is a file, not a folder "
                f"({e.strerror}: {e.filename}); choose another path"
            ) from None
        err = storage_error(e, path, "creating the store's folder", lost="nothing was written")
        if err is None:
            raise
        raise err from None


def _prepare_folder(path: str, *, create: bool) -> None:
    if os.path.exists(os.path.join(path, "data.mdb")):
        return
    if not create:
        raise NotFoundError(
            f"no ragstore store at {path}: check the path, or create the store first "
            "(`ragstore ingest STORE FILES`, or ragstore.open(path) with create=True)"
        )
    if os.path.isfile(path):
        raise InvalidInputError(f"{path} is a file; a store is a folder: choose another path")
    if os.path.isdir(path) and os.listdir(path):
        raise InvalidInputError(
            f"{path} is a non-empty folder that is not a ragstore store; choose an empty or new path"
        )
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise StoreNotWritableError(
            f"cannot create a store in {path}: the folder is not writable by this user or is on a read-only "
            "file system; choose a folder you can write"
        )
