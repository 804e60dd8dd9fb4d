"""Telling damage from other failures, and saying what to do about it.

LMDB has no checksums: a damaged page shows as lmdb's CorruptedError or
PageNotFoundError, a damaged value as bytes msgpack or UTF-8 refuses, or as a
value of the wrong shape. Each read path turns these into
:class:`~ragstore.errors.CorruptStoreError` through :func:`damage_guard`;
``check`` lists them one by one (:class:`DocDamage`). See docs/durability.md,
"Damage and recovery".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import lmdb

from ..errors import CorruptStoreError, DamagedRecordError
from .storage import is_storage_failure, storage_error

__all__ = ["DAMAGE_ERRORS", "DocDamage", "check_file_length", "damage_guard", "is_damage", "key_str", "shape_error"]


def key_str(k: Any) -> str:
    """A doc id key as text (ragstore writes them as UTF-8)."""
    try:
        return bytes(k).decode()
    except UnicodeDecodeError:
        raise DamagedRecordError(f"a document id key is not valid UTF-8: {bytes(k)[:40]!r}") from None


def shape_error(what: str, value: Any) -> DamagedRecordError:
    return DamagedRecordError(f"a {what} record decodes to {_short(value)}, not the fields ragstore writes")


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


# lmdb errors that are not damage: retried or reported as they are by the callers
_TRANSIENT_LMDB = (lmdb.MapResizedError, lmdb.MapFullError, lmdb.ReadersFullError, lmdb.LockError,
                   lmdb.ReadonlyError, lmdb.TlsFullError, lmdb.TxnFullError, lmdb.CursorFullError)
# what reading damaged LMDB pages or records raises (a damaged page gives lmdb's
# CorruptedError or PageNotFoundError, a damaged value our DamagedRecordError)
DAMAGE_ERRORS: tuple[type[BaseException], ...] = (lmdb.Error, DamagedRecordError, UnicodeDecodeError)


def is_damage(e: BaseException) -> bool:
    # an I/O error of the disk is the environment failing, not bytes that are wrong
    return isinstance(e, DAMAGE_ERRORS) and not isinstance(e, _TRANSIENT_LMDB) and not is_storage_failure(e)


@contextmanager
def damage_guard(path: str) -> Iterator[None]:
    """Turn what reading damaged records raises into a CorruptStoreError saying what to do."""
    try:
        yield
    except DamagedRecordError as e:
        if getattr(e, "advised", False):
            raise
        raise _advised(DamagedRecordError(_advice(path, str(e)))) from e
    except DAMAGE_ERRORS as e:
        err = storage_error(e, path, "reading the store", lost="nothing was changed")
        if err is not None:
            raise err from e
        if not is_damage(e):
            raise
        raise _advised(DamagedRecordError(_advice(path, f"{type(e).__name__}: {e}"))) from e


def _advised(e: DamagedRecordError) -> DamagedRecordError:
    e.advised = True  # type: ignore[attr-defined]  # an outer guard leaves it as it is
    return e


def _advice(path: str, what: str) -> str:
    return (f"the store at {path} is damaged: {what}. Run `ragstore check {path}` to list the damaged "
            f"records, then `ragstore check --fix {path}` to salvage the readable documents into a sound "
            "store (the damaged file is kept beside it), or restore a backup")


class DocDamage(NamedTuple):
    """A damaged record met by :meth:`Records.scan_docs`: where, and what was wrong."""

    where: str  # "document 'id'", or "docs table after 'id'" for a damaged page
    error: str
    doc_id: str | None  # None when the document's id itself is unreadable


def check_file_length(env: lmdb.Environment, path: str) -> None:
    """Refuse an LMDB file shorter than the pages its header says are in use.

    LMDB maps the file and reads pages through the mapping: a page past the
    file's end kills the process with SIGBUS at the first read that touches it
    (a query, check). The header's last used page tells, before anything is read.
    """
    last_pgno = env.info()["last_pgno"]
    psize = env.stat()["psize"]
    need = (last_pgno + 1) * psize
    try:
        size = os.path.getsize(os.path.join(path, "data.mdb"))
    except OSError:
        return  # lmdb opened it: let it report what it can
    if size < need:
        raise CorruptStoreError(
            f"the LMDB file {os.path.join(path, 'data.mdb')} is {size:,} bytes but its header says "
            f"{need:,} are in use: the file was truncated (an interrupted copy, a full disk) or its "
            "header is damaged. Nothing in it can be trusted to be readable: restore a backup, or the "
            "complete file if it was cut while copying"
        )
