"""The store's contents read as a catalog: documents listed by pages, chunks iterated, metadata updated.

- :meth:`Catalog.documents`: documents in id (byte) order, a page at a time;
  the page's ``next_cursor`` (the last id returned) starts the next page, so
  paging is stable while writers add or delete documents elsewhere in the order.
- :meth:`Catalog.chunks`: the chunk records of one document, or of the whole
  store in chunk-id order, optionally with their stored vectors; the store is
  read in windows of ``window`` chunks, each under its own read transaction,
  so a long iteration never pins an old snapshot (and the file's growth).
- :meth:`Catalog.update_meta`: a document's metadata replaced (or merged) in
  one write transaction, without re-embedding: the chunks, the vector index
  and the lexical index are untouched; the content hash is recomputed, so
  re-adding the document with its new metadata is "unchanged".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lmdb
import numpy as np

from ..config import StoreConfig
from ..errors import InvalidInputError, NotFoundError
from ..types import Document, DocumentInfo, DocumentPage, Hit, StoredChunk
from .codecs import ChunkRecord, DocRecord, from_u64, u64
from .damage import key_str
from .inputs import check_doc_id, check_meta, check_positive_int, check_source_filter, content_hash
from .records import Records
from .search import Searcher

__all__ = ["Catalog", "MAX_PAGE", "doc_text"]

MAX_PAGE = 10_000  # documents in one page: a page is built in memory


class Catalog:
    """Listing, iteration and metadata updates over :class:`Records`."""

    def __init__(self, records: Records, config: StoreConfig, searcher: Searcher, *, where: str) -> None:
        self.records = records
        self.config = config
        self.searcher = searcher
        self.where = where

    # ------------------------------------------------------------------ documents
    def documents(self, *, source: str | None = None, after: str | None = None, limit: int = 100) -> DocumentPage:
        """Up to ``limit`` documents with ids after ``after``, optionally of one source ("": none)."""
        want = None if source is None else check_source_filter(source)
        check_positive_int("limit", limit)
        if limit > MAX_PAGE:
            raise InvalidInputError(f"limit must be at most {MAX_PAGE}, got {limit}; page with the cursor instead")
        start = None if after is None else check_doc_id(after).encode()
        rec = self.records
        out: list[DocumentInfo] = []
        more = False
        with rec.read() as txn:
            cur = txn.cursor(db=rec.docs)
            positioned = cur.first() if start is None else cur.set_range(start)
            while positioned:
                k = bytes(cur.key())
                if start is not None and k == start:
                    positioned = cur.next()
                    continue
                doc = DocRecord.decode(cur.value())
                if want is None or doc.source == want:
                    if len(out) == limit:
                        more = True
                        break
                    out.append(_info(key_str(k), doc))
                positioned = cur.next()
        return DocumentPage(documents=out, next_cursor=out[-1].id if more and out else None)

    def all_documents(self, *, source: str | None = None, page: int = 1000) -> Iterator[DocumentInfo]:
        """Every document (of one source), page by page."""
        after = None
        while True:
            p = self.documents(source=source, after=after, limit=page)
            yield from p.documents
            if p.next_cursor is None:
                return
            after = p.next_cursor

    def document(self, doc_id: str) -> Document:
        """The stored document, with its text rebuilt exactly from its chunks."""
        rec = self.records
        doc_id = check_doc_id(doc_id)
        with rec.read() as txn:
            doc = rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.where}")
            text = doc_text(rec, txn, doc_id, doc)
        return Document(id=doc_id, source=doc.source or None, meta=doc.meta, text=text, n_chunks=doc.n_chunks,
                        n_tokens=doc.n_tokens, content_hash=doc.content_hash, first_chunk_id=doc.first_chunk)

    def vectors(self, doc_id: str) -> np.ndarray:
        """A document's stored vectors, float32 (n_chunks, dim), in chunk order."""
        rec = self.records
        doc_id = check_doc_id(doc_id)
        with rec.read() as txn:
            doc = rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.where}")
            vecs = rec.doc_vectors(txn, doc, self.config.vector_numpy_dtype, self.config.dim)
            if vecs is None:
                raise NotFoundError(f"document {doc_id!r} in {self.where} lacks vectors; run check() to see the damage")
            return vecs.copy()  # the LMDB buffers end with the transaction

    def doc_ids(self, source: str | None = None) -> list[str]:
        """Document ids in byte order, optionally of one source ("": those without one)."""
        want = None if source is None else check_source_filter(source)
        with self.records.read() as txn:
            return [d for d, doc in self.records.iter_docs(txn) if want is None or doc.source == want]

    # ------------------------------------------------------------------ chunks
    def contains(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str) or not doc_id:
            return False
        with self.records.read() as txn:
            return self.records.has_doc(txn, doc_id)

    def count(self) -> int:
        with self.records.read() as txn:
            return self.records.counts(txn).documents

    def sources(self) -> dict[str, int]:
        with self.records.read() as txn:
            return self.records.source_counts(txn)

    def chunk_hit(self, chunk_id: int) -> Hit:
        """One chunk with its continuation (score 0)."""
        if isinstance(chunk_id, bool) or not isinstance(chunk_id, (int, np.integer)) or not 0 <= chunk_id < 2**64:
            raise NotFoundError(f"no chunk {chunk_id!r} in {self.where} (chunk ids are integers from 1)")
        with self.records.read() as txn:
            hit = self.searcher.chunk_hit(txn, int(chunk_id))
        if hit is None:
            raise NotFoundError(f"no chunk {chunk_id} in {self.where}")
        return hit

    def chunks(self, doc_id: str | None = None, *, vectors: bool = False, window: int = 1000) -> Iterator[StoredChunk]:
        """The chunks of one document in order, or of the store in chunk-id order."""
        check_positive_int("window", window)
        if doc_id is not None:
            yield from self._doc_chunks(check_doc_id(doc_id), vectors)
            return
        rec = self.records
        after = 0
        while True:
            with rec.read() as txn:
                cur = txn.cursor(db=rec.chunks)
                batch: list[tuple[int, ChunkRecord]] = []
                positioned = cur.set_range(u64(after + 1))
                while positioned and len(batch) < window:
                    batch.append((from_u64(bytes(cur.key())), ChunkRecord.decode(cur.value())))
                    positioned = cur.next()
                if not batch:
                    return
                docs = rec.get_docs(txn, {c.doc_id for _, c in batch})
                vecs = self._vectors(txn, [cid for cid, _ in batch]) if vectors else {}
                out = [_chunk(cid, c, docs.get(c.doc_id), vecs.get(cid)) for cid, c in batch]
            yield from out
            after = batch[-1][0]

    def _doc_chunks(self, doc_id: str, vectors: bool) -> list[StoredChunk]:
        rec = self.records
        with rec.read() as txn:
            doc = rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.where}")
            records = rec.doc_chunks(txn, doc_id, doc)
            vecs = self._vectors(txn, list(doc.chunk_ids)) if vectors else {}
            return [_chunk(cid, c, doc, vecs.get(cid)) for cid, c in zip(doc.chunk_ids, records, strict=True)]

    def _vectors(self, txn: lmdb.Transaction, ids: list[int]) -> dict[int, np.ndarray]:
        found, arr = self.records.vectors_of(txn, ids, self.config.vector_numpy_dtype, self.config.dim)
        arr = arr.copy()  # the LMDB buffers end with the transaction
        return {cid: arr[j] for j, cid in enumerate(found)}

    # ------------------------------------------------------------------ metadata
    def update_meta(self, doc_id: str, meta: Mapping[str, Any], *, merge: bool = False) -> DocumentInfo:
        """Replace (or, with ``merge``, update) a document's metadata; nothing is re-embedded."""
        doc_id = check_doc_id(doc_id)
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"meta must be a mapping (a JSON object), got {type(meta).__name__}")
        given = check_meta(dict(meta))
        rec = self.records

        def write(txn: lmdb.Transaction) -> DocumentInfo:
            doc = rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.where}; add it first (nothing was changed)")
            new_meta = {**doc.meta, **given} if merge else given
            text = doc_text(rec, txn, doc_id, doc)
            new = doc._replace(meta=new_meta, content_hash=content_hash(text, doc.source, new_meta))
            rec.put_doc(txn, doc_id, new)
            return _info(doc_id, new)

        return rec.write(write)


def doc_text(rec: Records, txn: lmdb.Transaction, doc_id: str, doc: DocRecord) -> str:
    """A document's text, rebuilt exactly from its chunk records (a missing one is damage)."""
    parts: list[str] = []
    for c in rec.doc_chunks(txn, doc_id, doc):
        parts += (c.pre, c.text)
    parts.append(doc.tail)
    return "".join(parts)


def _info(doc_id: str, doc: DocRecord) -> DocumentInfo:
    return DocumentInfo(id=doc_id, source=doc.source or None, meta=doc.meta, n_chunks=doc.n_chunks,
                        n_tokens=doc.n_tokens, content_hash=doc.content_hash)


def _chunk(cid: int, c: ChunkRecord, doc: DocRecord | None, vector: np.ndarray | None) -> StoredChunk:
    return StoredChunk(chunk_id=cid, doc_id=c.doc_id, source=(doc.source or None) if doc is not None else None,
                       position=c.position, text=c.text, start=c.start, end=c.end, n_tokens=c.n_tokens,
                       vector=vector)
