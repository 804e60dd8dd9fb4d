"""The write transactions: the only code that changes documents, chunks and vectors.

Each call is one LMDB transaction that also updates the live counts and
appends one change-log entry naming the chunk ids it added and removed, which
the vector index applies after the commit (see :mod:`.sync`). A store with a
lexical index gets its postings written in the same transaction
(:mod:`.lexical`), so every reader sees the chunks and their postings together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lmdb
import numpy as np

from ..errors import NotFoundError
from ..types import Deleted
from .chunking import ChunkedDoc
from .lexical import LexicalTxn
from .records import ADD, DEL, ChunkRecord, DocRecord, LogOp, Records

__all__ = ["Prepared", "write_documents", "delete_documents"]


@dataclass
class Prepared:
    """A document validated and chunked; ``vectors`` are set before it is written."""

    doc_id: str
    source: str
    meta: dict
    content_hash: str
    chunked: ChunkedDoc
    vectors: np.ndarray | None
    status: str  # "added" or "replaced"

    @property
    def n_chunks(self) -> int:
        return len(self.chunked.chunks)


def _remove(records: Records, txn: lmdb.Transaction, doc_id: str, doc: DocRecord, ops: list[LogOp],
            lex: LexicalTxn | None) -> None:
    if lex is not None:
        lex.remove(doc)  # reads the chunk texts: before they are deleted
    records.delete_doc(txn, doc_id, doc)
    ops.append(LogOp(DEL, doc.source, doc.first_chunk, doc.n_chunks))


def write_documents(records: Records, batch: Sequence[Prepared], vector_dtype: np.dtype) -> int:
    """Write (or replace) documents whose vectors are set; returns the log sequence."""

    def write(txn: lmdb.Transaction) -> int:
        ops: list[LogOp] = []
        lex = LexicalTxn.open(records, txn)
        next_chunk = records.next_chunk_id(txn)
        d_docs = d_chunks = d_tokens = 0
        for p in batch:
            assert p.vectors is not None  # the ingest run embeds before it writes
            old = records.get_doc(txn, p.doc_id)
            if old is not None:
                _remove(records, txn, p.doc_id, old, ops, lex)
                d_docs -= 1
                d_chunks -= old.n_chunks
                d_tokens -= old.n_tokens
            first = next_chunk
            chunks = p.chunked.chunks
            next_chunk += len(chunks)
            records.append_chunks(
                txn,
                first,
                [ChunkRecord(p.doc_id, c.position, c.text, c.start, c.end, c.n_tokens, pre)
                 for c, pre in zip(chunks, p.chunked.pres, strict=True)],
                p.vectors.astype(vector_dtype),
            )
            if lex is not None:
                lex.add(first, [c.text for c in chunks])
            ntok = p.chunked.n_tokens
            records.put_doc(txn, p.doc_id, DocRecord(p.source, p.meta, first, len(chunks), ntok, p.content_hash,
                                                     p.chunked.tail))
            records.add_source_count(txn, p.source, len(chunks))
            ops.append(LogOp(ADD, p.source, first, len(chunks)))
            d_docs += 1
            d_chunks += len(chunks)
            d_tokens += ntok
        records.put_meta(txn, "next_chunk", next_chunk)
        if lex is not None:
            lex.finish()
        records.add_counts(txn, documents=d_docs, chunks=d_chunks, tokens=d_tokens)
        return records.append_log(txn, ops)

    return records.write(write)


def delete_documents(records: Records, doc_ids: Sequence[str], *, missing_ok: bool, where: str) -> Deleted:
    """Delete documents in one transaction: all or nothing unless ``missing_ok``."""

    def write(txn: lmdb.Transaction) -> Deleted:
        ops: list[LogOp] = []
        removed, d_tok = 0, 0
        gone: list[str] = []
        lex = LexicalTxn.open(records, txn)
        for doc_id in dict.fromkeys(doc_ids):
            old = records.get_doc(txn, doc_id)
            if old is None:
                if missing_ok:
                    continue
                raise NotFoundError(f"no document {doc_id!r} in {where}; nothing was deleted")
            _remove(records, txn, doc_id, old, ops, lex)
            removed += old.n_chunks
            d_tok += old.n_tokens
            gone.append(doc_id)
        if lex is not None:
            lex.finish()
        if ops:
            records.add_counts(txn, documents=-len(gone), chunks=-removed, tokens=-d_tok)
            records.append_log(txn, ops)
        return Deleted(removed, doc_ids=tuple(gone))

    return records.write(write)


