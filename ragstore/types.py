"""Small result and input records returned by the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import StoreConfig

__all__ = [
    "Doc",
    "Chunk",
    "Hit",
    "Document",
    "AddResult",
    "IngestProgress",
    "IngestSummary",
    "Stats",
    "CheckReport",
    "CompactResult",
    "IndexedLexical",
    "Deleted",
    "DocumentInfo",
    "DocumentPage",
    "StoredChunk",
    "Exported",
    "BackupResult",
    "StoreConfig",  # defined in config.py, re-exported for 0.1 imports
]


def _short(text: str | None, n: int = 40) -> str:
    if text is None:
        return "None"
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 1] + "…")


@dataclass(frozen=True)
class Doc:
    """One document to add with :meth:`Store.add_many`."""

    id: str
    text: str
    source: str | None = None
    meta: Mapping[str, Any] | None = None
    vectors: Any = None  # (n_chunks, dim) array-like


@dataclass(frozen=True)
class Chunk:
    """A fixed-size token window of a document: ``text == document[start:end]``."""

    position: int
    text: str
    start: int
    end: int
    n_tokens: int

    def __repr__(self) -> str:
        return f"Chunk(position={self.position}, [{self.start}:{self.end}], {_short(self.text)})"


@dataclass(frozen=True)
class Hit:
    """A retrieved neighbour with its continuation (RETRO's [N, F] pair).

    ``score`` is higher-is-better: cosine or inner-product similarity, or the
    negated squared L2 distance for ``metric="l2sq"``. ``continuation`` is the
    next chunk of the same document, or None at the document's end.
    """

    chunk_id: int
    doc_id: str
    source: str | None
    position: int
    score: float
    text: str
    continuation: str | None
    start: int
    end: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Hit(score={self.score:.4f}, doc_id={self.doc_id!r}, position={self.position}, "
            f"text={_short(self.text)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "source": self.source,
            "position": self.position,
            "score": self.score,
            "text": self.text,
            "continuation": self.continuation,
            "start": self.start,
            "end": self.end,
            "meta": self.meta,
        }


@dataclass(frozen=True)
class Document:
    """A stored document, as :meth:`Store.get` returns it."""

    id: str
    source: str | None
    meta: dict[str, Any]
    text: str
    n_chunks: int
    n_tokens: int
    content_hash: str
    first_chunk_id: int

    def __repr__(self) -> str:
        return f"Document(id={self.id!r}, source={self.source!r}, n_chunks={self.n_chunks}, text={_short(self.text)})"


@dataclass(frozen=True)
class AddResult:
    """What :meth:`Store.add` did: status is 'added', 'replaced' or 'unchanged'."""

    doc_id: str
    status: str
    n_chunks: int


@dataclass(frozen=True)
class IngestProgress:
    """Passed to ``add_many(on_progress=...)`` after each committed batch."""

    documents: int  # handled so far: added + replaced + unchanged + skipped
    chunks: int
    tokens: int
    added: int
    replaced: int
    unchanged: int
    skipped: int
    seconds: float


@dataclass(frozen=True)
class IngestSummary:
    documents: int
    added: int
    replaced: int
    unchanged: int
    chunks: int
    tokens: int
    seconds: float
    skipped: int = 0  # invalid documents reported to on_invalid

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.documents} documents ({self.added} added, {self.replaced} replaced, "
            f"{self.unchanged} unchanged"
            + (f", {self.skipped} skipped" if self.skipped else "")
            + f"), {self.chunks} chunks in {self.seconds:.1f}s "
            f"({self.chunks_per_second:.0f} chunks/s)"
        )


@dataclass(frozen=True)
class Stats:
    documents: int
    chunks: int
    tokens: int
    sources: dict[str, int]
    bytes_on_disk: int
    lmdb_bytes: int
    index_bytes: int
    index_vectors: int
    deleted_not_compacted: int
    unindexed: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CheckReport:
    """``ok`` is True when LMDB and the index agree; ``problems`` says where not."""

    ok: bool
    problems: list[str]
    fixed: bool
    documents: int
    chunks: int

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class CompactResult:
    bytes_before: int
    bytes_after: int
    tombstones_removed: int
    lmdb_compacted: bool


@dataclass(frozen=True)
class IndexedLexical:
    """What :meth:`Store.index_lexical` built: chunks analyzed, postings written, the new config."""

    chunks: int
    postings: int
    seconds: float
    config: StoreConfig


class Deleted(int):
    """What :meth:`Store.delete_many` deleted: the number of chunks removed (an
    int, as in 0.1) with the ids of the documents removed in ``doc_ids``."""

    doc_ids: tuple[str, ...]

    def __new__(cls, chunks: int, *, doc_ids: tuple[str, ...] = ()) -> Deleted:
        self = super().__new__(cls, chunks)
        self.doc_ids = doc_ids
        return self

    @property
    def chunks(self) -> int:
        return int(self)

    __str__ = int.__repr__  # printed and formatted as the number, as 0.1 did

    def __repr__(self) -> str:
        return f"Deleted(chunks={int(self)}, doc_ids={self.doc_ids!r})"


@dataclass(frozen=True)
class DocumentInfo:
    """A stored document without its text, as :meth:`Store.list_documents` lists it."""

    id: str
    source: str | None
    meta: dict[str, Any]
    n_chunks: int
    n_tokens: int
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "meta": self.meta, "n_chunks": self.n_chunks,
                "n_tokens": self.n_tokens, "content_hash": self.content_hash}


@dataclass(frozen=True)
class DocumentPage:
    """One page of documents; ``next_cursor`` (None on the last page) is the ``after=`` of the next."""

    documents: list[DocumentInfo]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"documents": [d.to_dict() for d in self.documents], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class StoredChunk:
    """One stored chunk, as :meth:`Store.iter_chunks` yields it (``vector`` only when asked for)."""

    chunk_id: int
    doc_id: str
    source: str | None
    position: int
    text: str
    start: int
    end: int
    n_tokens: int
    vector: Any = None  # float32 (dim,) array, or None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"chunk_id": self.chunk_id, "doc_id": self.doc_id, "source": self.source,
                             "position": self.position, "text": self.text, "start": self.start, "end": self.end,
                             "n_tokens": self.n_tokens}
        if self.vector is not None:
            d["vector"] = [float(x) for x in self.vector]
        return d

    def __repr__(self) -> str:
        return f"StoredChunk({self.chunk_id}, doc_id={self.doc_id!r}, position={self.position}, {_short(self.text)})"


@dataclass(frozen=True)
class Exported:
    """What :meth:`Store.export_jsonl` wrote."""

    documents: int
    chunks: int
    vectors: bool
    path: str


@dataclass(frozen=True)
class BackupResult:
    """What :meth:`Store.backup` wrote: an openable store folder."""

    path: str
    documents: int
    bytes: int
    index_included: bool
