"""ragstore: an embedded on-disk datastore for retrieval-based language models."""

from . import _compat, embedders  # noqa: F401 - _compat installs the 0.1 module names
from .aio import AsyncStore
from .config import QueryOptions
from .embedders import base as embed  # noqa: F401 - the 0.1 name of the embedder registry
from .errors import (
    AlreadyExistsError,
    CheckpointWarning,
    ConfigMismatchError,
    CorruptStoreError,
    DiskFullError,
    EmbedderNotAvailableError,
    InvalidInputError,
    NotFoundError,
    RagstoreError,
    ReadOnlyError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    StoreNotWritableError,
)
from .retrieval import pipeline, prompting, retro
from .store import Store, open
from .types import (
    AddResult,
    BackupResult,
    CheckReport,
    Chunk,
    CompactResult,
    Doc,
    Document,
    DocumentInfo,
    DocumentPage,
    Exported,
    Hit,
    IngestProgress,
    IngestSummary,
    Stats,
    StoreConfig,
    StoredChunk,
)

__version__ = "0.1.0"

__all__ = [
    "open",
    "Store",
    "AsyncStore",
    "DocumentInfo",
    "DocumentPage",
    "StoredChunk",
    "Exported",
    "BackupResult",
    "embed",
    "embedders",
    "retro",
    "pipeline",
    "prompting",
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
    "StoreConfig",
    "QueryOptions",
    "RagstoreError",
    "InvalidInputError",
    "NotFoundError",
    "AlreadyExistsError",
    "ConfigMismatchError",
    "EmbedderNotAvailableError",
    "StoreClosedError",
    "StoreLockedError",
    "ReadOnlyError",
    "CorruptStoreError",
    "StorageError",
    "DiskFullError",
    "StoreNotWritableError",
    "CheckpointWarning",
    "__version__",
]
