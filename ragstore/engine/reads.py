"""Reads of what the store holds, by id: documents, their vectors, chunks, ids, sources.

Each call is one LMDB read transaction, so it sees one commit; nothing here
touches the vector index (queries are :mod:`.search`'s).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import NotFoundError
from ..types import Document, Hit
from .inputs import check_doc_id, check_source
from .records import Records
from .search import Searcher

__all__ = ["Reader"]


class Reader:
    """Reads by id from ``records``; ``where`` (the store's path) names the store in errors."""

    def __init__(self, records: Records, searcher: Searcher, *, where: str, vector_dtype: np.dtype, dim: int) -> None:
        self.records = records
        self.searcher = searcher
        self.where = where
        self.vector_dtype = vector_dtype
        self.dim = dim

    def document(self, doc_id: str) -> Document:
        rec = self.records
        doc_id = check_doc_id(doc_id)
        with rec.read() as txn:
            doc = rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.where}")
            parts = []
            for c in rec.doc_chunks(txn, doc_id, doc):
                parts.append(c.pre)
                parts.append(c.text)
            parts.append(doc.tail)
        return Document(id=doc_id, source=doc.source or None, meta=doc.meta, text="".join(parts),
                        n_chunks=doc.n_chunks, n_tokens=doc.n_tokens, content_hash=doc.content_hash,
                        first_chunk_id=doc.first_chunk)

    def vectors(self, doc_id: str) -> np.ndarray:
        rec = self.records
        doc_id = check_doc_id(doc_id)
        with rec.read() as txn:
            doc = rec.get_doc(txn, doc_id)
            if doc is None:
                raise NotFoundError(f"no document {doc_id!r} in {self.where}")
            vecs = rec.doc_vectors(txn, doc, self.vector_dtype, self.dim)
            if vecs is None:
                raise NotFoundError(f"document {doc_id!r} in {self.where} lacks vectors; run check() to see the damage")
            return vecs.copy()  # the LMDB buffers end with the transaction

    def contains(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str) or not doc_id:
            return False
        with self.records.read() as txn:
            return self.records.has_doc(txn, doc_id)

    def count(self) -> int:
        with self.records.read() as txn:
            return self.records.counts(txn).documents

    def doc_ids(self, source: str | None) -> Iterator[str]:
        want = None if source is None else check_source(source)
        with self.records.read() as txn:
            ids = [doc_id for doc_id, doc in self.records.iter_docs(txn) if want is None or doc.source == want]
        return iter(ids)

    def sources(self) -> dict[str, int]:
        with self.records.read() as txn:
            return self.records.source_counts(txn)

    def chunk(self, chunk_id: int) -> Hit:
        if isinstance(chunk_id, bool) or not isinstance(chunk_id, (int, np.integer)) or not 0 <= chunk_id < 2**64:
            raise NotFoundError(f"no chunk {chunk_id!r} in {self.where} (chunk ids are integers from 1)")
        with self.records.read() as txn:
            hit = self.searcher.chunk_hit(txn, int(chunk_id))
        if hit is None:
            raise NotFoundError(f"no chunk {chunk_id} in {self.where}")
        return hit
