"""The lexical (BM25) index, kept in LMDB beside the chunks and written in their transactions.

Layout (sub-database ``lex_post`` and one ``meta`` record):

- ``lex_post``: ``term (UTF-8) + b"\\0" + base chunk id (u64 big-endian)`` -> a
  block of postings (:class:`PostingBlock`): per chunk holding the term, its id
  as an offset from ``base`` (u32) and ``tf << 16 | chunk length in terms``
  (u32), little-endian, in chunk-id order. A term's blocks sort by base, so its
  postings read in chunk-id order with one cursor walk. Chunk ids only grow,
  so a write appends: a new block per term and transaction, merged into the
  term's last block while that one is small (few LMDB records per term even
  when documents come one a transaction). Keeping the length in each posting
  lets a query score from the postings alone, with no lookup per candidate.
- ``meta["lex_stats"]``: ``[chunks indexed, their total length in terms]``,
  BM25's N and average length.

Deletes remove their postings eagerly, in the deleting transaction (the chunk
texts are read and analyzed again to find the terms): scores stay exact BM25
over the live chunks and a query never meets a dead id. The lexical settings
(analyzer, k1, b) are the ``lexical`` field of the store's config; a store
without it (made before ragstore had this index) has no lexical index until
:meth:`LexicalIndex.build` makes one.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import lmdb
import numpy as np

from ..errors import DamagedRecordError, RagstoreError
from .analysis import Analyzer
from .codecs import ChunkRecord, DocRecord, decode_chunk, from_u64, u64
from .records import Records

__all__ = ["LexicalIndex", "LexicalTxn", "PostingBlock", "Postings", "lexical_config", "LexicalMissingError",
           "STATS_KEY", "BLOCK_MAX", "MERGE_BELOW"]

STATS_KEY = "lex_stats"
BLOCK_MAX = 4096  # postings per block written by a rebuild; a merge never grows a block past it
MERGE_BELOW = 256  # a term's last block is appended to while it holds fewer postings than this
_CLIP = 0xFFFF  # tf and length are u16 halves; a 64-token chunk is far below (clipped, not wrapped, above)
_LITTLE = sys.byteorder == "little"
_PAIR = struct.Struct("<II")
_REBUILD_WINDOW = 20_000  # chunks analyzed before their postings are written, in a rebuild


class LexicalMissingError(RagstoreError):
    """A lexical or hybrid query on a store without a lexical index."""


def lexical_config(records: Records, txn: lmdb.Transaction) -> dict[str, Any] | None:
    """The lexical settings recorded in the store's config as of ``txn``, or None."""
    cfg = records.get_meta(txn, "config") or {}
    lex = cfg.get("lexical")
    return lex if isinstance(lex, dict) else None


# ---------------------------------------------------------------------- codec
def _term_prefix(term: str) -> bytes:
    return term.encode() + b"\0"  # \w+ terms hold no NUL: a prefix matches one term's blocks only


class PostingBlock:
    """Codec of one ``lex_post`` key and value (the only code that knows their bytes)."""

    @staticmethod
    def key(term: str, base: int) -> bytes:
        return _term_prefix(term) + u64(base)

    @staticmethod
    def base_of(key: Any) -> int:
        return from_u64(bytes(key[-8:]))

    @staticmethod
    def term_of(key: Any) -> str:
        return bytes(key[:-9]).decode()

    @staticmethod
    def encode(base: int, flat: list[int]) -> bytes:
        """``flat`` = [chunk id, packed, chunk id, packed, ...] in id order, ids >= base."""
        if len(flat) == 2:  # most terms of a transaction are in one of its chunks
            return _PAIR.pack(flat[0] - base, flat[1])
        out = array("I", flat)
        out[0::2] = array("I", [c - base for c in flat[0::2]])
        if not _LITTLE:  # pragma: no cover - big-endian machines
            out.byteswap()
        return out.tobytes()

    @staticmethod
    def decode(base: int, raw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk ids u64, tf, length) of a block."""
        if len(raw) % 8:
            raise DamagedRecordError(f"a lexical postings block of {len(raw)} bytes (a multiple of 8 expected)")
        a = np.frombuffer(raw, dtype="<u4").reshape(-1, 2)
        ids = a[:, 0].astype(np.uint64) + np.uint64(base)
        return ids, (a[:, 1] >> 16).astype(np.float32), (a[:, 1] & _CLIP).astype(np.float32)

    @staticmethod
    def count(raw: Any) -> int:
        return len(raw) // 8

    @staticmethod
    def pack(tf: int, length: int) -> int:
        return (min(tf, _CLIP) << 16) | min(length, _CLIP)


@dataclass
class Postings:
    """A term's postings as read by a query: chunk ids, tf and chunk lengths, and df."""

    ids: np.ndarray
    tf: np.ndarray
    length: np.ndarray

    @property
    def df(self) -> int:
        return len(self.ids)


def _offsets(raw: bytes) -> array:
    """A block's chunk-id offsets (from its base), in order."""
    a = array("I")
    a.frombytes(raw)
    if not _LITTLE:  # pragma: no cover - big-endian machines
        a.byteswap()
    return a[0::2]


def _blocks(cur: lmdb.Cursor, term: str) -> Iterable[tuple[Any, Any]]:
    prefix = _term_prefix(term)
    n = len(prefix)
    if not cur.set_range(prefix):
        return
    for k, v in cur:
        if bytes(k[:n]) != prefix:
            return
        yield k, v


def _last_block(cur: lmdb.Cursor, prefix: bytes) -> bool:
    """Position ``cur`` on the term's last block; False if it has none."""
    ok = cur.set_range(prefix[:-1] + b"\x01")  # the first key past every "term\0..." key
    ok = cur.prev() if ok else cur.last()
    return ok and bytes(cur.key()[: len(prefix)]) == prefix


# ---------------------------------------------------------------------- writes
class LexicalTxn:
    """The lexical side of one write transaction: ``add`` and ``remove`` chunks, then ``finish``."""

    def __init__(self, records: Records, txn: lmdb.Transaction, settings: Mapping[str, Any]) -> None:
        if records.lex_post is None:
            raise RagstoreError("the store's lexical table is not open in this process; reopen the store")
        self.records = records
        self.txn = txn
        self.db = records.lex_post
        self.analyzer = Analyzer.of(settings)
        self.pending: dict[str, list[int]] = {}
        self.d_chunks = 0
        self.d_length = 0

    @classmethod
    def open(cls, records: Records, txn: lmdb.Transaction) -> LexicalTxn | None:
        """The lexical writer for ``txn``, or None when the store has no lexical index.

        Read from the transaction, not from this process's config: another
        process may have built the index since this one opened the store.
        """
        settings = lexical_config(records, txn)
        return None if settings is None else cls(records, txn, settings)

    def add(self, first: int, texts: Iterable[str]) -> None:
        """Postings of chunks ``first, first + 1, ...`` with these texts."""
        pending, counts = self.pending, self.analyzer.counts
        get = pending.get
        n = total = 0
        for j, text in enumerate(texts):
            cnt, length = counts(text)
            cid = first + j
            ln = length if length < _CLIP else _CLIP  # PostingBlock.pack, inlined: the ingest's inner loop
            for term, tf in cnt.items():
                p = (tf << 16 | ln) if tf < _CLIP else (_CLIP << 16 | ln)
                lst = get(term)
                if lst is None:
                    pending[term] = [cid, p]
                else:
                    lst.append(cid)
                    lst.append(p)
            n += 1
            total += length
        self.d_chunks += n
        self.d_length += total

    def remove(self, doc: DocRecord) -> None:
        """Drop the postings of a document's chunks (before its records are deleted)."""
        lo, hi = doc.first_chunk, doc.first_chunk + doc.n_chunks
        terms: set[str] = set()
        raw = self.records.get_raw_chunks(self.txn, doc.chunk_ids)
        for cid in doc.chunk_ids:
            r = raw.get(cid)
            if r is None:
                continue  # damaged store: check() reports it and check(fix=True) rebuilds the postings
            try:
                text = decode_chunk(r).text
            except DamagedRecordError:
                continue
            cnt, length = self.analyzer.counts(text)
            terms.update(cnt)
            self.d_chunks -= 1
            self.d_length -= length
        cur = self.txn.cursor(db=self.db)
        for term in terms:
            if term in self.pending:  # the document was added earlier in this same transaction
                flat = self.pending[term]
                kept: list[int] = []
                for i in range(0, len(flat), 2):
                    if not lo <= flat[i] < hi:
                        kept += flat[i: i + 2]
                if kept:
                    self.pending[term] = kept
                else:
                    del self.pending[term]
            self._drop(cur, term, lo, hi)

    def _drop(self, cur: lmdb.Cursor, term: str, lo: int, hi: int) -> None:
        prefix = _term_prefix(term)
        # the last block whose base is below hi, then backwards while blocks may hold ids >= lo;
        # plain Python on the bytes: a delete touches ~100 small blocks, numpy's per-call cost dominates
        ok = cur.set_range(prefix + u64(hi))
        ok = cur.prev() if ok else cur.last()
        while ok:
            k = bytes(cur.key())
            if k[: len(prefix)] != prefix:
                return
            base = PostingBlock.base_of(k)
            raw = bytes(cur.value())
            offs = _offsets(raw)
            if not offs or base + offs[-1] < lo:
                return
            i, j = bisect_left(offs, lo - base), bisect_left(offs, hi - base)
            if i < j:
                if j - i == len(offs):
                    cur.delete()  # leaves the cursor on the next record: prev() below is the one before
                else:
                    cur.put(k, raw[: 8 * i] + raw[8 * j:])
            if base < lo:
                return
            ok = cur.prev()

    def finish(self) -> None:
        """Write the pending postings and the collection stats."""
        cur = self.txn.cursor(db=self.db)
        put = self.txn.put
        for term in sorted(self.pending):
            flat = self.pending[term]
            prefix = _term_prefix(term)
            n = len(flat) // 2
            if n < MERGE_BELOW and _last_block(cur, prefix):
                k = bytes(cur.key())
                old = cur.value()
                base = PostingBlock.base_of(k)
                if PostingBlock.count(old) < MERGE_BELOW and flat[-2] - base < 1 << 32:
                    cur.put(k, bytes(old) + PostingBlock.encode(base, flat))
                    continue
            put(prefix + u64(flat[0]), PostingBlock.encode(flat[0], flat), db=self.db)
        if self.d_chunks or self.d_length:
            n_chunks, total = self.records.get_meta(self.txn, STATS_KEY, [0, 0])
            self.records.put_meta(self.txn, STATS_KEY, [n_chunks + self.d_chunks, total + self.d_length])
        self.pending = {}
        self.d_chunks = self.d_length = 0


# ---------------------------------------------------------------------- the index
@dataclass(frozen=True)
class LexicalCheck:
    """What check() compared: postings and totals expected from the chunk records and found stored."""

    expected_postings: int
    stored_postings: int
    expected_stats: tuple[int, int]
    stored_stats: tuple[int, int]
    digests_agree: bool

    @property
    def ok(self) -> bool:
        return (self.digests_agree and self.expected_postings == self.stored_postings
                and self.expected_stats == self.stored_stats)


_M1, _M2, _C1, _C2 = (np.uint64(x) for x in (0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15,
                                             0xD6E8FEB86659FD93))


def _mix(term_h: Any, ids: np.ndarray, packed: np.ndarray) -> int:
    """An order-free digest of postings: the sum of a 64-bit mix (splitmix64) of each."""
    with np.errstate(over="ignore"):
        x = term_h ^ (ids.astype(np.uint64) * _C1) ^ (packed.astype(np.uint64) * _C2)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        x = x ^ (x >> np.uint64(31))
        return int(x.sum(dtype=np.uint64))


def _term_hash(term: str) -> np.uint64:
    return np.uint64(hash(term) & 0xFFFFFFFFFFFFFFFF)  # per process, and both sides are hashed in one


class LexicalIndex:
    """Builds, checks and reads the lexical index of ``records`` (settings from the config in each txn)."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def settings(self, txn: lmdb.Transaction) -> dict[str, Any] | None:
        return lexical_config(self.records, txn)

    # -- reads -------------------------------------------------------------
    def stats(self, txn: lmdb.Transaction) -> tuple[int, int]:
        n, total = self.records.get_meta(txn, STATS_KEY, [0, 0])
        return int(n), int(total)

    def postings(self, txn: lmdb.Transaction, term: str) -> Postings:
        db = self.records.lex_post
        parts = [] if db is None else [PostingBlock.decode(PostingBlock.base_of(k), v)
                                       for k, v in _blocks(txn.cursor(db=db), term)]
        if not parts:
            z = np.zeros(0, np.float32)
            return Postings(np.zeros(0, np.uint64), z, z)
        if len(parts) == 1:
            return Postings(*parts[0])
        return Postings(*(np.concatenate(c) for c in zip(*parts, strict=True)))

    # -- build -------------------------------------------------------------
    def build(self, settings: Mapping[str, Any], *, record_config: bool) -> tuple[int, int]:
        """(Re)build the postings from every chunk record in one transaction; returns (chunks, postings).

        With ``record_config`` the settings are recorded in the config in that
        same transaction: readers see no lexical index, then a whole one.
        """
        rec = self.records
        rec.ensure_lexical_tables()
        db = rec.lex_post
        assert db is not None  # ensured just above

        def write(txn: lmdb.Transaction) -> tuple[int, int]:
            txn.drop(db, delete=False)
            analyzer = Analyzer.of(settings)
            n_chunks = total = n_post = 0
            window: dict[str, list[int]] = {}
            in_window = 0
            for k, v in txn.cursor(db=rec.chunks):
                cid = from_u64(bytes(k))
                try:
                    text = ChunkRecord.decode(v).text
                except DamagedRecordError:
                    continue  # check() lists it; a salvage drops its document
                cnt, length = analyzer.counts(text)
                packed_len = min(length, _CLIP)
                for term, tf in cnt.items():
                    lst = window.get(term)
                    item = (cid, (min(tf, _CLIP) << 16) | packed_len)
                    if lst is None:
                        window[term] = list(item)
                    else:
                        lst += item
                n_post += len(cnt)
                n_chunks += 1
                total += length
                in_window += 1
                if in_window >= _REBUILD_WINDOW:
                    _flush(txn, db, window)
                    window, in_window = {}, 0
            _flush(txn, db, window)
            rec.put_meta(txn, STATS_KEY, [n_chunks, total])
            if record_config:
                cfg = dict(rec.get_meta(txn, "config"))
                cfg["lexical"] = dict(settings)
                rec.put_meta(txn, "config", cfg)
            return n_chunks, n_post

        return rec.write(write)

    # -- check -------------------------------------------------------------
    def compare(self, txn: lmdb.Transaction) -> LexicalCheck | None:
        """Postings and totals expected from every chunk record against those stored (None: no index)."""
        settings = self.settings(txn)
        if settings is None:
            return None
        rec = self.records
        analyzer = Analyzer.of(settings)
        hashes: dict[str, np.uint64] = {}
        exp_digest = n_exp = n_chunks = total = 0
        th: list[np.uint64] = []
        ids: list[int] = []
        packed: list[int] = []
        for k, v in txn.cursor(db=rec.chunks):
            cid = from_u64(bytes(k))
            try:
                text = ChunkRecord.decode(v).text
            except DamagedRecordError:
                continue
            cnt, length = analyzer.counts(text)
            n_chunks += 1
            total += length
            for term, tf in cnt.items():
                h = hashes.get(term)
                if h is None:
                    h = hashes[term] = _term_hash(term)
                th.append(h)
                ids.append(cid)
                packed.append(PostingBlock.pack(tf, length))
            if len(th) > 200_000:
                exp_digest += _mix(np.array(th, np.uint64), np.array(ids), np.array(packed))
                n_exp += len(th)
                th, ids, packed = [], [], []
        if th:
            exp_digest += _mix(np.array(th, np.uint64), np.array(ids), np.array(packed))
            n_exp += len(th)
        got_digest = n_got = 0
        db = rec.lex_post
        if db is not None:
            for k, v in txn.cursor(db=db):
                term = PostingBlock.term_of(k)
                h = hashes.get(term)
                if h is None:
                    h = hashes[term] = _term_hash(term)
                a = np.frombuffer(v, dtype="<u4").reshape(-1, 2)
                got_digest += _mix(h, a[:, 0].astype(np.uint64) + np.uint64(PostingBlock.base_of(k)), a[:, 1])
                n_got += len(a)
        mask = (1 << 64) - 1
        return LexicalCheck(n_exp, n_got, (n_chunks, total), self.stats(txn),
                            (exp_digest & mask) == (got_digest & mask))

    def problems(self, txn: lmdb.Transaction) -> list[str]:
        c = self.compare(txn)
        if c is None or c.ok:
            return []
        out = []
        if c.expected_postings != c.stored_postings or not c.digests_agree:
            out.append(f"lexical index: its postings disagree with the chunk records ({c.expected_postings} "
                       f"expected, {c.stored_postings} stored{'' if c.digests_agree else ', contents differ'})")
        if c.expected_stats != c.stored_stats:
            out.append(f"lexical index: its totals (chunks, terms) are {c.stored_stats}, the chunk records "
                       f"say {c.expected_stats}")
        return out


def _flush(txn: lmdb.Transaction, db: Any, window: dict[str, list[int]]) -> None:
    """A rebuild window's postings, as blocks of at most BLOCK_MAX postings each."""
    step = 2 * BLOCK_MAX
    for term in sorted(window):
        flat = window[term]
        prefix = _term_prefix(term)
        for i in range(0, len(flat), step):
            part = flat[i: i + step]
            txn.put(prefix + u64(part[0]), PostingBlock.encode(part[0], part), db=db)
