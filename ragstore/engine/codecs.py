"""Record codecs: the bytes of each LMDB value, read and written by name.

Every record type ragstore keeps in LMDB (see :mod:`ragstore.engine.records` for
the layout) is encoded and decoded here only. The bytes are those of ragstore
0.1, so stores made by 0.1 open unchanged; a value of the wrong shape is damage
and decodes to :class:`~ragstore.errors.DamagedRecordError`.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import msgpack
import numpy as np

from ..errors import DamagedRecordError
from .damage import shape_error

__all__ = ["ADD", "DEL", "ChunkRecord", "Counts", "DocRecord", "LogOp", "decode_chunk", "from_u64", "pack", "u64",
           "unpack"]

ADD, DEL = 1, 2
_U64 = struct.Struct(">Q")
_unpackb = msgpack.unpackb


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(b: Any) -> int:
    return _U64.unpack(b)[0]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(b: Any) -> Any:
    try:
        return msgpack.unpackb(b, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        # ragstore wrote every value with msgpack: bytes it cannot read are damage
        raise DamagedRecordError(f"a record's bytes are not valid msgpack ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------- codecs
# Each record type is read and written here only, by name; the bytes on disk
# are those of ragstore 0.1 (a dict with one-letter keys for documents, a list
# for chunks and log operations), so stores made by 0.1 open unchanged.


class DocRecord(NamedTuple):
    """``docs`` value: a document's place in the chunk table and what it was made from."""

    source: str  # "" for no source
    meta: dict
    first_chunk: int
    n_chunks: int
    n_tokens: int
    content_hash: str
    tail: str  # text after the last chunk (trailing whitespace), so get() rebuilds it exactly

    @property
    def chunk_ids(self) -> range:
        return range(self.first_chunk, self.first_chunk + self.n_chunks)

    def encode(self) -> bytes:
        # key order matters for byte-identical records: that of 0.1
        return pack({"s": self.source, "m": self.meta, "c0": self.first_chunk, "n": self.n_chunks,
                     "t": self.n_tokens, "h": self.content_hash, "tail": self.tail})

    @classmethod
    def decode(cls, raw: Any) -> DocRecord:
        d = unpack(raw)
        try:
            v = (d["s"], d["m"], d["c0"], d["n"], d["t"], d["h"], d["tail"])
        except (KeyError, TypeError):
            raise shape_error("document", d) from None
        # checked here, once: a damaged value of the right msgpack shape would
        # otherwise fail far from its cause (a TypeError in a join, a huge range).
        # Inline type tests: a query decodes ~10 documents (a call each costs more);
        # msgpack decodes no int of 2**64 or more, so ">= 0" bounds them.
        s, m, c0, n, t, h, tail = v
        if (type(s) is str and type(m) is dict and type(c0) is int and type(n) is int and type(t) is int
                and type(h) is str and type(tail) is str and c0 >= 0 and n >= 0 and t >= 0):
            return tuple.__new__(cls, v)
        raise shape_error("document", d)


class ChunkRecord(NamedTuple):
    """``chunks`` value: one chunk of a document."""

    doc_id: str
    position: int
    text: str
    start: int  # character offsets in the document: text == document[start:end]
    end: int
    n_tokens: int
    pre: str  # the document's text between the previous chunk's end and this one's start

    def encode(self) -> bytes:
        return pack(list(self))

    @classmethod
    def decode(cls, raw: Any) -> ChunkRecord:
        return decode_chunk(raw)

    def continued_by(self, nxt: ChunkRecord | None) -> bool:
        """Whether ``nxt`` (the record of chunk id + 1) is this chunk's continuation."""
        return nxt is not None and nxt.doc_id == self.doc_id and nxt.position == self.position + 1


def decode_chunk(raw: Any) -> ChunkRecord:
    """A ``chunks`` value, its shape checked.

    The query path decodes ~20 of these a query, so the checks are inline type
    tests on a tuple (half the time of ``_make`` plus a helper call per field).
    """
    try:
        v = _unpackb(raw, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise DamagedRecordError(f"a record's bytes are not valid msgpack ({type(e).__name__}: {e})") from None
    if type(v) is tuple and len(v) == 7:
        d, p, t, s, end, n, pre = v
        if (type(d) is str and type(p) is int and type(t) is str and type(s) is int and type(end) is int
                and type(n) is int and type(pre) is str and p >= 0 and s >= 0 and end >= 0 and n >= 0):
            return tuple.__new__(ChunkRecord, v)
    raise shape_error("chunk", v)


class LogOp(NamedTuple):
    """One operation of a change-log entry: chunk ids ``first_chunk .. + n_chunks`` of a source."""

    op: int  # ADD or DEL
    source: str
    first_chunk: int
    n_chunks: int

    @property
    def keys(self) -> np.ndarray:
        return np.arange(self.first_chunk, self.first_chunk + self.n_chunks, dtype=np.uint64)

    @classmethod
    def decode_entry(cls, raw: Any) -> list[LogOp]:
        """A change-log entry's operations."""
        v = unpack(raw)
        try:
            ops = [cls._make(op) for op in v]
        except TypeError:
            raise shape_error("change-log", v) from None
        if not all(op.op in (ADD, DEL) and isinstance(op.source, str) and _uint(op.first_chunk)
                   and _uint(op.n_chunks) for op in ops):
            raise shape_error("change-log", v)
        return ops


def _uint(x: Any) -> bool:
    return type(x) is int and 0 <= x < 1 << 64


class Counts(NamedTuple):
    """The live totals kept in ``meta`` (derived: ``check(fix=True)`` recounts them)."""

    documents: int
    chunks: int
    tokens: int
    tombstones: int
