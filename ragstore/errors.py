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
