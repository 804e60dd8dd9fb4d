"""The HTTP app: :func:`create_app` assembles the backend, the token check,
the middleware, the error handlers and the routers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import Store, __version__
from . import routes
from .auth import BearerAuth
from .backend import Backend
from .middleware import BodyLimit, JSONResponse, configure_logging, install_error_handlers
from .options import ServeOptions

__all__ = ["create_app", "app_from_env", "openapi_schema", "DESCRIPTION"]

DESCRIPTION = """\
JSON API over one ragstore store: chunks of documents with their continuations
and vectors, for retrieval-augmented language models (RETRO / kNN-LM style).

Authentication: a server started with `--token T` wants `Authorization: Bearer T`
on every request except `GET /health` (401 otherwise). A `--read-only` server
answers writes with 403.

Document ids appear only under `/documents/{doc_id}` (percent-encoded);
`POST /documents:batch` and `POST /documents:delete` act on several documents.

Errors are `{"error": NAME, "message": TEXT}`: 404 not found, 409 already
exists / configuration mismatch, 413 body too large, 422 invalid input (also
a body that is not JSON text), 423 store locked by another writer, 403
read-only, 503 store closed, embedder unavailable or writer process
restarting, 500 internal error (no details; see the server log). Messages
never hold server paths.
"""


def create_app(
    store: str | os.PathLike[str] | Store,
    *,
    readonly: bool = False,
    token: str | None = None,
    embedder: Any = None,
    lock_timeout: float = ServeOptions.lock_timeout,
    max_body_bytes: int = ServeOptions.max_body_bytes,
    writer_uds: str | None = None,
    threads: int | None = None,
) -> FastAPI:
    """The ASGI app over ``store`` (a path, opened at startup, or an open Store).

    - ``embedder``: an embedder object (or spec, or "module:attr" import path)
      for stores made with a custom embedder; None uses the store's own.
    - ``readonly``: refuse writes with 403 (the store is opened read-only).
    - ``token``: require ``Authorization: Bearer TOKEN`` except on /health.
    - ``lock_timeout``: seconds a write waits for another process's writer lock
      before answering 423.
    - ``threads``: reads served at once (default: the number of CPUs).
    - ``writer_uds``: forward writes to the writer process listening on this
      Unix socket and open the store read-only (what :func:`ragstore.serving.http.serve`
      does for each worker when ``workers > 1``).
    """
    backend = Backend(store, readonly=readonly, embedder=embedder, lock_timeout=lock_timeout,
                      writer_uds=writer_uds, threads=threads)
    auth = BearerAuth(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(backend.startup)
        try:
            yield
        finally:
            await backend.aclose()

    app = FastAPI(
        title="ragstore",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # served by routes.docs, behind the token like every route but /health
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONResponse,
    )
    app.state.backend = backend
    app.state.auth = auth
    app.add_middleware(BodyLimit, max_body=max_body_bytes)
    install_error_handlers(app, paths=backend.paths, refuse=auth.refuse)
    app.include_router(routes.service)
    app.include_router(routes.api)
    app.include_router(routes.docs)
    return app


def openapi_schema() -> dict[str, Any]:
    """The API's OpenAPI schema (the same for every store and option)."""
    return create_app("unused").openapi()


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: their options are the
    :class:`ServeOptions` JSON in ``$RAGSTORE_SERVER_CONFIG``."""
    opts = ServeOptions.from_env()
    configure_logging(opts.log_level)  # a fresh (spawned) process: nothing is configured yet
    return create_app(
        opts.store,
        readonly=opts.readonly,
        token=opts.token,
        embedder=opts.embedder,
        lock_timeout=opts.lock_timeout,
        max_body_bytes=opts.max_body_bytes,
        writer_uds=opts.writer_uds,
        threads=opts.threads,
    )
