"""Telling the environment's failures from damage and bugs: a full disk, a read-only folder, I/O errors.

The store's files live on a disk that can fill up, a file system that can be
read-only, a folder the user may not write. Such failures come out of the
layers below as ``OSError`` (with an errno), as ``lmdb.Error`` (errno text in
the message only; LMDB reports a write refused for lack of space as an
"Input/output error") or as usearch's ``RuntimeError`` ("Failed to serialize
into stream"). :func:`storage_error` turns them into
:class:`~ragstore.errors.StorageError` subclasses saying what failed and what
to do, so none reaches the user raw or is taken for damage.
"""

from __future__ import annotations

import errno
import os
import resource

import lmdb

from ..errors import DiskFullError, StorageError, StoreNotWritableError

__all__ = ["storage_error", "is_storage_failure", "FULL_ERRNOS", "READONLY_ERRNOS"]

# EFBIG: a file size limit (ulimit -f, RLIMIT_FSIZE) was reached: the same remedy as a full disk
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
READONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_KNOWN = FULL_ERRNOS | READONLY_ERRNOS | {errno.EIO}
_LOW_SPACE = 16 << 20  # free bytes under which an I/O error on write is taken for a full disk


def _errno_of(e: BaseException) -> int | None:
    if isinstance(e, OSError):
        return e.errno
    if isinstance(e, lmdb.Error):
        # py-lmdb gives "what: strerror" without the number
        msg = str(e)
        for code in _KNOWN:
            if msg.endswith(os.strerror(code)):
                return code
    return None


def _fsize_limit() -> int | None:
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _looks_full(path: str) -> bool:
    if _fsize_limit() is not None:
        return True
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _LOW_SPACE


def is_storage_failure(e: BaseException) -> bool:
    """Whether ``e`` is the environment failing (not damage, not a bug)."""
    return (_errno_of(e) in _KNOWN or isinstance(e, lmdb.PanicError)
            or (isinstance(e, RuntimeError) and "serialize" in str(e)))


def storage_error(e: BaseException, path: str, doing: str, *, lost: str) -> StorageError | None:
    """The StorageError to raise for ``e`` met while ``doing`` in the store at ``path``; None if not one.

    ``lost`` says what the failure costs, e.g. "this write was not committed;
    nothing acknowledged was lost".
    """
    if isinstance(e, lmdb.PanicError):
        # LMDB stops an environment whose meta page could not be written (a full disk)
        return StorageError(
            f"the store's LMDB environment at {path} stopped after a failed write ({e}), as LMDB does when "
            f"the disk fails under it: close the store and open it again (free space first if the disk "
            f"is full); {lost}"
        )
    code = _errno_of(e)
    if code is None and isinstance(e, RuntimeError) and "serialize" in str(e):
        code = errno.EIO  # usearch's save: it does not say why a write failed
    if code is None or code not in _KNOWN:
        return None
    detail = f"{type(e).__name__}: {e}"
    if code in FULL_ERRNOS or (code == errno.EIO and _looks_full(path)):
        limit = _fsize_limit()
        why = "disk full" if limit is None else (
            f"disk full or the file size limit ({limit:,} bytes, `ulimit -f`) reached")
        return DiskFullError(f"{why} while {doing} in {path} ({detail}): free space and rerun; {lost}")
    if code in READONLY_ERRNOS:
        return StoreNotWritableError(
            f"the store at {path} cannot be written ({doing}: {detail}): the file system is read-only or this "
            f"user may not write there. Open it read-only (readonly=True, --read-only) to read it, or make "
            f"the folder writable; {lost}"
        )
    return StorageError(
        f"input/output error while {doing} in {path} ({detail}): the disk may be failing, full or "
        f"disconnected; check it and rerun; {lost}"
    )
