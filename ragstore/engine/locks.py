"""The store's file locks (``flock``; released by the kernel when a process dies).

- ``open.lock``: held shared by every open store object; ``compact()`` rewrites
  the LMDB file only when it can take it exclusively (nobody else has it open).
- ``writer.lock``: one writing process at a time. Taken at the first write and
  kept until close; it holds the writer's pid, for the message of whoever waits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StoreLockedError
from .storage import storage_error

__all__ = ["StoreLocks"]


class StoreLocks:
    """The open lock and the writer lock of the store folder ``path``."""

    def __init__(self, path: str, *, lock_timeout: float = 0.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self._open_fd: int | None = None
        self._writer_fd: int | None = None

    @property
    def writing(self) -> bool:
        return self._writer_fd is not None

    def take_open(self) -> None:
        """The shared open lock; none on a read-only filesystem (nobody can compact there)."""
        try:
            self._open_fd = os.open(os.path.join(self.path, "open.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._open_fd, fcntl.LOCK_SH)
        except OSError:
            if self._open_fd is not None:
                os.close(self._open_fd)
            self._open_fd = None

    def take_writer(self) -> bool:
        """The writer lock, waiting up to ``lock_timeout``; False if this object held it already."""
        if self._writer_fd is not None:
            return False
        try:
            fd = os.open(os.path.join(self.path, "writer.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only file system, a folder this user may not write
            err = storage_error(e, self.path, "taking the writer lock", lost="nothing was written")
            if err is None:
                raise
            raise err from None
        deadline = time.monotonic() + max(0.0, self.lock_timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    raise StoreLockedError(
                        f"store {self.path} is being written by another writer (pid {holder}); one writer "
                        "at a time: wait for it to close, pass lock_timeout=SECONDS to wait, or open with "
                        "readonly=True to read meanwhile"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._writer_fd = fd
        return True

    def release_writer(self) -> None:
        _close(self._writer_fd)
        self._writer_fd = None

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Try to hold the open lock exclusively (True: no one else has the store open)."""
        if self._open_fd is None:
            yield False
            return
        try:
            fcntl.flock(self._open_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fcntl.flock(self._open_fd, fcntl.LOCK_SH)  # a failed conversion may have dropped it
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(self._open_fd, fcntl.LOCK_SH)

    def release(self) -> None:
        self.release_writer()
        _close(self._open_fd)
        self._open_fd = None


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)  # closing drops the flock
        except OSError:
            pass
