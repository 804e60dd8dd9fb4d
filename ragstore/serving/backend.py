"""The store behind the HTTP app, and how requests reach it.

:class:`Backend` opens the store (at startup, or it is handed an open one),
runs reads in worker threads (at most ``threads`` at once), runs writes one at
a time, or forwards them to the writer process when the app is one of several
workers (see :mod:`ragstore.serving.runner`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .. import Store
from ..embedders.loading import load_embedder
from ..errors import InvalidInputError, ReadOnlyError, StoreClosedError

__all__ = ["Backend", "WRITER_BASE_URL"]

log = logging.getLogger("ragstore.serving.http")

T = TypeVar("T")

WRITER_BASE_URL = "http://ragstore-writer"  # the host name is never resolved: the transport is a Unix socket


class Backend:
    """The store of one app: opened on first use (or at startup), closed at shutdown.

    - ``store``: a path (opened here, closed at shutdown) or an open Store (left open).
    - ``readonly``: refuse writes with 403 (unless they are forwarded).
    - ``writer_uds``: forward writes to the writer process listening on this
      Unix socket; the store is then opened read-only here.
    - ``threads``: reads served at once.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store,
        *,
        readonly: bool,
        embedder: Any,
        lock_timeout: float,
        writer_uds: str | None,
        threads: int | None,
    ) -> None:
        threads = threads or os.cpu_count() or 1
        if not isinstance(threads, int) or threads < 1:
            raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self._lock = threading.Lock()
        # Writes run one at a time. The Store serializes them too, but its first
        # write takes the writer lock outside its mutex: two threads writing
        # first at once get StoreLockedError (see docs/server.md, "engine notes").
        self._write_lock = threading.Lock()
        self.writer_uds = writer_uds
        if isinstance(store, Store):
            self._store: Store | None = store
            self._owned = False
            self.path = store.path
            self.readonly = readonly or store.readonly
        else:
            self._store = None
            self._owned = True
            self.path = os.fspath(store)
            self.readonly = readonly
        self._embedder = embedder
        self._lock_timeout = lock_timeout
        self._client: Any = None
        self._closed = False
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def refuses_writes(self) -> bool:
        return self.readonly and self.writer_uds is None

    def paths(self) -> list[str]:
        """The store's path as given and resolved: kept out of the messages clients get."""
        return [self.path, os.path.abspath(self.path), os.path.realpath(self.path)]

    def store(self) -> Store:
        s = self._store
        if s is not None:
            return s
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"the server is shutting down; store {self.path} is closed")
            if self._store is None:
                self._store = Store(
                    self.path,
                    create=False,
                    # workers read; their writes go to the writer process
                    readonly=self.readonly or self.writer_uds is not None,
                    embedder=load_embedder(self._embedder),
                    lock_timeout=self._lock_timeout,
                )
            return self._store

    def startup(self) -> None:
        s = self.store()
        _ = s.embedder  # load the model now: a missing model fails the start, not a request

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        with self._lock:
            self._closed = True
            if self._store is not None and self._owned:
                self._store.close()
                self._store = None

    async def read(self, fn: Callable[[Store], T]) -> T:
        """``fn(store)`` in a worker thread; at most ``threads`` at once (embedding
        queries is CPU-bound: more threads than cores only queue in BLAS)."""
        if self._limiter is None:  # made in the event loop that uses it
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(lambda: fn(self.store()), limiter=self._limiter)

    async def write(self, request: Request, fn: Callable[[Store], Response]) -> Response:
        """``fn(store)`` here (one write at a time), forwarded to the writer process, or refused."""
        if self.refuses_writes:
            raise ReadOnlyError(f"this server is read-only (--read-only): {request.method} {request.url.path} refused")
        if self.writer_uds is not None:
            return await self._forward(request)

        def serialized() -> Response:
            with self._write_lock:
                return fn(self.store())

        return await run_in_threadpool(serialized)

    def _writer_client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=self.writer_uds),
                base_url=WRITER_BASE_URL,
                # no read timeout: a large batch may take minutes; a dead writer
                # closes the socket, which fails the request at once
                timeout=httpx.Timeout(None, connect=10.0),
            )
        return self._client

    async def _forward(self, request: Request) -> Response:
        import httpx

        body = await request.body()
        # the raw path keeps percent-escapes: a document id may hold '/', '?' or '#'
        target = request.scope.get("raw_path") or request.url.path.encode()
        if request.scope.get("query_string"):
            target += b"?" + request.scope["query_string"]
        try:
            r = await self._writer_client().request(
                request.method,
                target.decode("latin-1"),
                content=body,
                headers={"content-type": request.headers.get("content-type", "application/json")},
            )
        except httpx.TransportError as e:
            # killed or restarting: the write may or may not have committed; the
            # client is told so, and retries (a replayed add then answers 409)
            log.error("writer process unreachable at %s: %s", self.writer_uds, e)
            raise StoreClosedError(
                "the writer process is not answering (restarting?); this write may not have been applied: "
                "retry it; reads still work"
            ) from None
        return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))
