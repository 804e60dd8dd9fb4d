"""Every error ragstore raises on purpose derives from :class:`RagstoreError`.

Each message says what was wrong and what to do about it, so the CLI can print
it as is, without a traceback.
"""

from __future__ import annotations

__all__ = [
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
    "DamagedRecordError",
    "StorageError",
    "DiskFullError",
    "StoreNotWritableError",
    "CheckpointWarning",
]


class RagstoreError(Exception):
    """Base class of all ragstore errors."""


class InvalidInputError(RagstoreError, ValueError):
    """Bad input (empty text, invalid UTF-8, wrong vector shape, NaN ...).

    Nothing was changed in the store."""


class NotFoundError(RagstoreError, KeyError):
    """A document (or store) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(RagstoreError):
    """A document id is already used; pass ``replace=True`` to overwrite it."""


class ConfigMismatchError(RagstoreError):
    """The store was made with another embedder, tokenizer, dimension or metric."""


class EmbedderNotAvailableError(RagstoreError):
    """An embedder's weights or runtime are not installed."""


class StoreClosedError(RagstoreError):
    """The store was used after ``close()``."""


class StoreLockedError(RagstoreError):
    """Another process holds the store's writer lock."""


class ReadOnlyError(RagstoreError):
    """A write was attempted on a store opened with ``readonly=True``."""


class CorruptStoreError(RagstoreError):
    """The store's files are damaged: a truncated or unreadable LMDB file, damaged records.

    The message says what is damaged and what to do: ``ragstore check STORE``
    lists the damage, ``ragstore check --fix STORE`` salvages the readable
    documents into a sound store (or says why it cannot), or restore a backup.
    """


class DamagedRecordError(CorruptStoreError):
    """One LMDB record (or page) cannot be read or decoded: ``check()`` lists each one."""


class StorageError(RagstoreError):
    """The environment failed the store's files: an I/O error, a full disk, a folder that cannot be written.

    Not damage and not a bug: the message says what failed and what to do.
    Nothing acknowledged is lost: a write that fails this way was not committed.
    """


class DiskFullError(StorageError):
    """The disk (or a file size limit, ``ulimit -f``, or a quota) left no room to write.

    Free space and rerun: the write that failed was not committed, every
    acknowledged one is kept, and the store opens as before.
    """


class StoreNotWritableError(StorageError):
    """The store's folder cannot be written (a read-only file system, no permission).

    Open it with ``readonly=True`` (``--read-only``) to read it, or make it writable.
    """


class CheckpointWarning(UserWarning):
    """An index checkpoint could not be saved (a full disk ...): nothing is lost.

    The index is derived: the next open replays LMDB's change log (or rebuilds
    the index from the records), only more slowly.
    """
