"""HTTP server: a JSON API over one store (FastAPI on uvicorn).

Install with ``pip install 'ragstore[server]'``; run with ``ragstore serve STORE``
(or ``python -m ragstore.serving.http STORE``). See docs/server.md.

- :func:`create_app` builds the ASGI app over a store path or an open
  :class:`~ragstore.Store` (pass ``embedder=`` for a store made with a custom
  embedder object).
- :func:`serve` runs it with uvicorn. With ``workers > 1`` every worker
  process opens the store read-only and answers reads itself; writes are
  forwarded over a private Unix socket to one writer process, the only one
  that ever takes the store's writer lock.

Errors are JSON ``{"error": NAME, "message": TEXT}`` with the status of
:data:`ERROR_STATUS`; an unexpected exception is logged with its traceback and
answered with a generic 500, never the traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

try:
    from fastapi import FastAPI, HTTPException, Path, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import JSONResponse as _StarletteJSONResponse
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"the ragstore HTTP server needs the 'server' extra ({e.name} is missing): "
        "pip install 'ragstore[server]'"
    ) from e

import anyio
import anyio.to_thread
import numpy as np

from .. import __version__
from ..embedders.loading import load_embedder
from ..errors import (
    AlreadyExistsError,
    ConfigMismatchError,
    CorruptStoreError,
    EmbedderNotAvailableError,
    InvalidInputError,
    NotFoundError,
    RagstoreError,
    ReadOnlyError,
    StoreClosedError,
    StoreLockedError,
)
from ..store import Store
from ..types import Doc, Hit

__all__ = ["create_app", "serve", "app_from_env", "openapi_schema", "load_embedder", "ERROR_STATUS", "main"]

log = logging.getLogger("ragstore.serving.http")

MAX_K = 1000
MAX_RETRO_K = 100
MAX_BATCH = 1024
MAX_DOCS = 10_000
DEFAULT_MAX_BODY = 64_000_000
DEFAULT_LOCK_TIMEOUT = 10.0
# Longer than clients keep idle connections (httpx: 5 s, aiohttp: 15 s), so that the
# client, not the server, closes them: with uvicorn's 5 s default an idle connection
# closed by the server just as the client reuses it fails the request (ReadError).
DEFAULT_KEEP_ALIVE = 75.0
ENV_CONFIG = "RAGSTORE_SERVER_CONFIG"

# Most specific first: the first isinstance match wins.
ERROR_STATUS: list[tuple[type[RagstoreError], int]] = [
    (NotFoundError, 404),
    (AlreadyExistsError, 409),
    (ConfigMismatchError, 409),
    (InvalidInputError, 422),
    (StoreLockedError, 423),
    (ReadOnlyError, 403),
    (StoreClosedError, 503),
    (EmbedderNotAvailableError, 503),
    (CorruptStoreError, 500),
    (RagstoreError, 400),
]


def _status_of(exc: RagstoreError) -> int:
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 400  # pragma: no cover - RagstoreError is last


# ---------------------------------------------------------------------- JSON
def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).hex()  # as the CLI prints them: meta written by the library may hold bytes
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


class JSONResponse(_StarletteJSONResponse):
    """Compact UTF-8 JSON; bytes in meta as hex; never NaN."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
        ).encode("utf-8")


def _error(status: int, name: str, message: str, details: Any = None, headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": name, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------------- models
class _In(BaseModel):
    # strict: "10" is not an int, 1 is not a bool; unknown fields are refused
    model_config = ConfigDict(extra="forbid", strict=True)


Vector = Annotated[list[float], Field(min_length=1)]
Meta = dict[str, Any]
# what the engine refuses, said in the schema where JSON Schema can say it
Text = Annotated[str, Field(min_length=1, pattern=r"\S")]
DocId = Annotated[str, Field(min_length=1, max_length=480, description="Document id (at most 480 UTF-8 bytes).")]
Source = Annotated[str, Field(min_length=1, max_length=200)]


class QueryRequest(_In):
    query: Text | Vector = Field(description="A text (embedded by the store's embedder) or a vector of the store's dimension.")
    k: int = Field(10, ge=1, le=MAX_K, description="Number of neighbours.")
    sources: list[Source] | None = Field(None, description="Search only these sources (unknown names match nothing).")
    exclude_docs: list[DocId] | None = Field(None, description="Never return chunks of these documents.")
    rerank: bool | None = Field(None, description="Re-score candidates with the exact vectors (default: on for quantized indexes).")
    exact: bool = Field(False, description="Brute force over every stored vector (slow; ground truth).")


class BatchQueryRequest(_In):
    queries: (
        Annotated[list[Text], Field(min_length=1, max_length=MAX_BATCH)]
        | Annotated[list[Vector], Field(min_length=1, max_length=MAX_BATCH)]
    ) = Field(description="Texts, or vectors of the store's dimension (not a mix).")
    k: int = Field(10, ge=1, le=MAX_K)
    sources: list[Source] | None = None
    exclude_docs: list[DocId] | None = None
    rerank: bool | None = None
    exact: bool = False


class RetrieveRequest(_In):
    text: Text = Field(description="The sequence; cut into chunks of the store's chunk_tokens with its tokenizer.")
    k: int = Field(2, ge=1, le=MAX_RETRO_K, description="Neighbours per chunk.")
    sources: list[Source] | None = None
    exclude_docs: list[DocId] | None = Field(None, description="E.g. the document the sequence comes from (RETRO training).")
    rerank: bool | None = None
    shift: bool = Field(False, description="Causal layout: position u holds the neighbours found with chunk u-1 (none at 0).")
    max_overlap: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Drop neighbours whose leakage (longest common token run / chunk length) exceeds this; k is kept.",
    )


class DocumentBody(_In):
    text: Text
    source: Source | None = None
    meta: Meta | None = None
    vectors: Annotated[list[Vector], Field(min_length=1)] | None = Field(
        None, description="Precomputed (n_chunks, dim) vectors for the chunks the store cuts the text into."
    )


class DocumentIn(DocumentBody):
    id: DocId


class AddRequest(DocumentIn):
    replace: bool = Field(False, description="Overwrite an existing document instead of answering 409.")


class BatchAddRequest(_In):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCS)
    replace: bool = Field(False, description="Replace changed documents, skip unchanged ones (resumable ingest).")


class DeleteManyRequest(_In):
    ids: list[DocId] = Field(min_length=1, max_length=MAX_DOCS)
    missing_ok: bool = Field(False, description="Ignore missing ids instead of answering 404 (and deleting nothing).")


class HitOut(BaseModel):
    chunk_id: int
    doc_id: str
    source: str | None
    position: int
    score: float = Field(description="Higher is better (cosine / inner product, or -L2^2).")
    text: str
    continuation: str | None = Field(description="The next chunk of the same document (RETRO's F), or null at its end.")
    start: int
    end: int
    meta: Meta


class QueryResponse(BaseModel):
    hits: list[HitOut]


class BatchQueryResponse(BaseModel):
    results: list[list[HitOut]]


class RetrievedChunk(BaseModel):
    position: int
    text: str = Field(description="The input chunk; text[start:end] of the request's text.")
    start: int
    end: int
    n_tokens: int
    retrieved_with: int | None = Field(description="The position whose chunk found these neighbours (u, or u-1 with shift).")
    neighbours: list[HitOut]
    overlaps: list[float] | None = Field(description="Leakage of each neighbour (with max_overlap), else null.")


class RetrieveResponse(BaseModel):
    chunks: list[RetrievedChunk]


class AddResultOut(BaseModel):
    doc_id: str
    status: Literal["added", "replaced", "unchanged"]
    n_chunks: int


class IngestSummaryOut(BaseModel):
    documents: int
    added: int
    replaced: int
    unchanged: int
    chunks: int
    tokens: int
    seconds: float


class DocumentOut(BaseModel):
    id: str
    source: str | None
    meta: Meta
    text: str
    n_chunks: int
    n_tokens: int
    content_hash: str
    first_chunk_id: int


class DeleteResponse(BaseModel):
    chunks_removed: int


class StatsOut(BaseModel):
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


class ConfigOut(BaseModel):
    schema_version: int
    embedder: str
    embedder_fingerprint: str
    dim: int
    normalized: bool
    tokenizer_hash: str
    chunk_tokens: int
    metric: str
    index_dtype: str
    vector_dtype: str
    connectivity: int
    created_at: float


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    readonly: bool


class ErrorOut(BaseModel):
    error: str = Field(description="The error's class name, e.g. NotFoundError.")
    message: str
    details: list[Any] | None = None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing or wrong bearer token (servers started with --token).",
        403: "The server or store is read-only.",
        404: "No such document or chunk.",
        409: "The document id exists (pass replace), or a configuration mismatch.",
        413: "Request body too large.",
        422: "Invalid input (bad JSON, wrong types, empty text, wrong vector shape ...).",
        423: "Another process holds the store's writer lock.",
        503: "The store is closed or its embedder is not available.",
    }
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut, "description": text[c]} for c in codes}
    out[500] = {"model": ErrorOut, "description": "Internal error (logged by the server; no details are sent)."}
    return out


_READ = (401, 413, 422, 503)
_WRITE = (401, 403, 409, 413, 422, 423, 503)


# ---------------------------------------------------------------------- backend
class _Backend:
    """The store behind the app, opened on first use (or at startup)."""

    def __init__(
        self,
        store: str | os.PathLike[str] | Store,
        *,
        readonly: bool,
        embedder: Any,
        lock_timeout: float,
        writer_uds: str | None,
    ) -> None:
        self._lock = threading.Lock()
        # Writes run one at a time. The Store serializes them too, but its first
        # write takes the writer lock outside its mutex: two threads writing
        # first at once get StoreLockedError (see docs/server.md, "engine notes").
        self.write_lock = threading.Lock()
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
        self.limiter: Any = None

    @property
    def refuses_writes(self) -> bool:
        return self.readonly and self.writer_uds is None

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

    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=self.writer_uds),
                base_url="http://ragstore-writer",
                timeout=httpx.Timeout(None, connect=10.0),
            )
        return self._client


def _hits(hits: list[Hit]) -> list[dict[str, Any]]:
    return [h.to_dict() for h in hits]


def _vectors(rows: Any, what: str) -> np.ndarray | None:
    """Vectors from JSON rows; ragged rows are an input error, not a crash."""
    if rows is None:
        return None
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise InvalidInputError(f"{what} have rows of different lengths {sorted(lengths)}")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), lengths.pop() if lengths else 0)


def _doc(d: DocumentIn) -> Doc:
    return Doc(d.id, d.text, d.source, d.meta, _vectors(d.vectors, f"vectors of document {d.id!r}"))


# ---------------------------------------------------------------------- middleware
class _Guard:
    """Bearer-token check, body-size limit and the last-resort error handler."""

    def __init__(self, app: Any, token: str | None, max_body: int) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body

    @staticmethod
    async def _send_error(scope: dict, receive: Any, send: Any, status: int, name: str, message: str,
                          headers: dict | None = None) -> None:
        await _error(status, name, message, headers=headers)(scope, receive, send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and scope.get("path") != "/health":
            got = headers.get(b"authorization", b"")
            scheme, _, cred = got.partition(b" ")
            if not hmac.compare_digest(b"Bearer " + cred.strip(), self.expected) or scheme.lower() != b"bearer":
                await self._send_error(
                    scope, receive, send, 401, "Unauthorized",
                    "this server needs 'Authorization: Bearer TOKEN' (the token given to ragstore serve --token)",
                    headers={"WWW-Authenticate": 'Bearer realm="ragstore"'},
                )
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = False
            if too_big:
                await self._send_error(scope, receive, send, 413, "PayloadTooLarge", f"request body is over {self.max_body} bytes")
                return
        seen = 0
        max_body = self.max_body

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > max_body:
                    # fastapi's HTTPException: its body parser re-raises it as is
                    raise HTTPException(413, f"request body is over {max_body} bytes")
            return msg

        started = False

        async def tracking_send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("internal error %s on %s %s", ref, scope.get("method"), scope.get("path"))
            if not started:
                await self._send_error(
                    scope, receive, send, 500, "InternalError", f"internal server error (reference {ref}; see the server log)"
                )


# ---------------------------------------------------------------------- app
DESCRIPTION = """\
JSON API over one ragstore store: chunks of documents with their continuations
and vectors, for retrieval-augmented language models (RETRO / kNN-LM style).

Authentication: a server started with `--token T` wants `Authorization: Bearer T`
on every request except `GET /health` (401 otherwise). A `--read-only` server
answers writes with 403.

Errors are `{"error": NAME, "message": TEXT}`: 404 not found, 409 already
exists / configuration mismatch, 413 body too large, 422 invalid input, 423
store locked by another writer, 403 read-only, 503 store closed or embedder
unavailable, 500 internal error (no details; see the server log).
"""


def create_app(
    store: str | os.PathLike[str] | Store,
    *,
    readonly: bool = False,
    token: str | None = None,
    embedder: Any = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    max_body_bytes: int = DEFAULT_MAX_BODY,
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
      Unix socket and open the store read-only (what :func:`serve` does for
      each worker when ``workers > 1``).
    """
    backend = _Backend(store, readonly=readonly, embedder=embedder, lock_timeout=lock_timeout, writer_uds=writer_uds)
    threads = threads or os.cpu_count() or 1
    if not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
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
        docs_url="/docs",
        redoc_url=None,
        default_response_class=JSONResponse,
    )
    app.state.backend = backend
    app.add_middleware(_Guard, token=token, max_body=max_body_bytes)

    @app.exception_handler(RagstoreError)
    async def _ragstore_error(request: Request, exc: RagstoreError) -> JSONResponse:
        status = _status_of(exc)
        if status >= 500:
            log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return _error(status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for e in exc.errors():
            details.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _error(422, "ValidationError", f"the request body is not valid JSON: {first['msg']}", details)
        where = ".".join(p for p in first["loc"] if p != "body") or "body"
        return _error(422, "ValidationError", f"{where}: {first['msg']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 400: "BadRequest"}
        return _error(exc.status_code, names.get(exc.status_code, "HTTPError"), str(exc.detail), headers=exc.headers)

    def s() -> Store:
        return backend.store()

    async def read(fn: Any) -> Any:
        """Run a read in a worker thread; at most ``threads`` at once (embedding
        queries is CPU-bound: more threads than cores only queue in BLAS)."""
        if backend.limiter is None:
            backend.limiter = anyio.CapacityLimiter(threads)
        return await anyio.to_thread.run_sync(fn, limiter=backend.limiter)

    async def write(request: Request, fn: Any, *args: Any) -> Any:
        """Run a write here, forward it to the writer process, or refuse it."""
        if backend.refuses_writes:
            raise ReadOnlyError(f"this server is read-only (--read-only): {request.method} {request.url.path} refused")
        if backend.writer_uds is not None:
            return await forward(request)
        def serialized() -> Any:
            with backend.write_lock:
                return fn(*args)

        return await run_in_threadpool(serialized)

    async def forward(request: Request) -> Response:
        import httpx

        body = await request.body()
        # the raw path keeps percent-escapes: a document id may hold '/', '?' or '#'
        target = request.scope.get("raw_path") or request.url.path.encode()
        if request.scope.get("query_string"):
            target += b"?" + request.scope["query_string"]
        try:
            r = await backend.client().request(
                request.method,
                target.decode("latin-1"),
                content=body,
                headers={"content-type": request.headers.get("content-type", "application/json")},
            )
        except httpx.TransportError as e:
            log.error("writer process unreachable at %s: %s", backend.writer_uds, e)
            raise StoreClosedError("the writer process is not answering; writes are unavailable, reads still work") from None
        return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))

    # ----------------------------------------------------------------- reads
    @app.get("/health", response_model=HealthOut, tags=["service"], summary="Liveness (never needs a token)")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__, "readonly": backend.refuses_writes})

    @app.get("/stats", response_model=StatsOut, tags=["service"], responses=_errors(*_READ), summary="Counts and sizes")
    async def stats() -> JSONResponse:
        return JSONResponse(await read(lambda: s().stats().to_dict()))

    @app.get("/config", response_model=ConfigOut, tags=["service"], responses=_errors(*_READ),
             summary="The store's fixed configuration (embedder, dimension, chunk size, metric ...)")
    async def config() -> JSONResponse:
        return JSONResponse(await read(lambda: s().config.to_dict()))

    @app.post("/query", response_model=QueryResponse, tags=["retrieval"], responses=_errors(*_READ),
              summary="The k nearest chunks to a text or a vector, with continuations")
    async def query(req: QueryRequest) -> JSONResponse:
        def run() -> dict:
            q = req.query if isinstance(req.query, str) else _vectors([req.query], "query vector")[0]
            hits = s().query(q, req.k, sources=req.sources, exclude_docs=req.exclude_docs, rerank=req.rerank,
                             exact=req.exact)
            return {"hits": _hits(hits)}

        return JSONResponse(await read(run))

    @app.post("/query/batch", response_model=BatchQueryResponse, tags=["retrieval"], responses=_errors(*_READ),
              summary="Several queries at once (all texts or all vectors)")
    async def query_batch(req: BatchQueryRequest) -> JSONResponse:
        def run() -> dict:
            qs: Any = req.queries
            if not isinstance(qs[0], str):
                qs = _vectors(qs, "query vectors")
            res = s().query_many(qs, req.k, sources=req.sources, exclude_docs=req.exclude_docs, rerank=req.rerank,
                                 exact=req.exact)
            return {"results": [_hits(h) for h in res]}

        return JSONResponse(await read(run))

    @app.post("/retrieve", response_model=RetrieveResponse, tags=["retrieval"], responses=_errors(*_READ),
              summary="RETRO: the k neighbours (with continuations) of every chunk of a sequence")
    async def retrieve(req: RetrieveRequest) -> JSONResponse:
        return JSONResponse({"chunks": await read(lambda: _retrieve_sequence(s(), req))})

    @app.get("/documents/{doc_id:path}", response_model=DocumentOut, tags=["documents"],
             responses=_errors(404, *_READ), summary="A stored document, its text rebuilt exactly")
    async def get_document(doc_id: str = Path(description="Document id (percent-encode '/', '?', '#' ...).")) -> JSONResponse:
        d = await read(lambda: s().get(doc_id))
        return JSONResponse({
            "id": d.id, "source": d.source, "meta": d.meta, "text": d.text, "n_chunks": d.n_chunks,
            "n_tokens": d.n_tokens, "content_hash": d.content_hash, "first_chunk_id": d.first_chunk_id,
        })

    @app.get("/chunks/{chunk_id}", response_model=HitOut, tags=["documents"], responses=_errors(404, *_READ),
             summary="One chunk with its continuation (score 0)")
    async def get_chunk(chunk_id: int = Path(ge=0, le=2**63 - 1)) -> JSONResponse:
        return JSONResponse(await read(lambda: s().get_chunk(chunk_id).to_dict()))

    # ----------------------------------------------------------------- writes
    @app.post("/documents", response_model=AddResultOut, status_code=201, tags=["documents"],
              responses={200: {"model": AddResultOut, "description": "Replaced or unchanged (with replace=true)."},
                         201: {"description": "Added."}, **_errors(*_WRITE)},
              summary="Add one document (409 if the id exists, unless replace=true)")
    async def add_document(req: AddRequest, request: Request) -> Response:
        def run() -> Response:
            d = _doc(req)
            r = s().add(d.id, d.text, source=d.source, meta=d.meta, vectors=d.vectors, replace=req.replace)
            return JSONResponse(r.__dict__, status_code=201 if r.status == "added" else 200)

        return await write(request, run)

    @app.put("/documents/{doc_id:path}", response_model=AddResultOut, tags=["documents"],
             responses={201: {"model": AddResultOut, "description": "Added (the id was new)."}, **_errors(*_WRITE)},
             summary="Create or replace a document under this id")
    async def put_document(req: DocumentBody, request: Request, doc_id: str = Path()) -> Response:
        def run() -> Response:
            d = Doc(doc_id, req.text, req.source, req.meta, _vectors(req.vectors, f"vectors of document {doc_id!r}"))
            r = s().add(d.id, d.text, source=d.source, meta=d.meta, vectors=d.vectors, replace=True)
            return JSONResponse(r.__dict__, status_code=201 if r.status == "added" else 200)

        return await write(request, run)

    @app.post("/documents/batch", response_model=IngestSummaryOut, tags=["documents"], responses=_errors(*_WRITE),
              summary="Add many documents; batches commit as they go (a bad document stops the rest)")
    async def add_documents(req: BatchAddRequest, request: Request) -> Response:
        def run() -> Response:
            summary = s().add_many([_doc(d) for d in req.documents], replace=req.replace)
            return JSONResponse({**summary.__dict__})

        return await write(request, run)

    @app.delete("/documents/{doc_id:path}", response_model=DeleteResponse, tags=["documents"],
                responses=_errors(404, *_WRITE), summary="Delete a document, its chunks and vectors")
    async def delete_document(request: Request, doc_id: str = Path()) -> Response:
        def run() -> Response:
            return JSONResponse({"chunks_removed": s().delete(doc_id)})

        return await write(request, run)

    @app.post("/documents/delete", response_model=DeleteResponse, tags=["documents"],
              responses=_errors(404, *_WRITE), summary="Delete several documents in one transaction")
    async def delete_documents(req: DeleteManyRequest, request: Request) -> Response:
        def run() -> Response:
            return JSONResponse({"chunks_removed": s().delete_many(req.ids, missing_ok=req.missing_ok)})

        return await write(request, run)

    return app


def _retrieve_sequence(store: Store, req: RetrieveRequest) -> list[dict[str, Any]]:
    """RETRO retrieval for a whole sequence (:func:`ragstore.retrieval.retro.retrieve_sequence`)."""
    from ..retrieval.retro import retrieve_sequence

    r = retrieve_sequence(
        store, req.text, k=req.k, exclude_docs=req.exclude_docs, shift=req.shift, max_overlap=req.max_overlap,
        sources=req.sources, rerank=req.rerank,
    )
    return [
        {"position": c.index, "text": c.text, "start": c.start, "end": c.end, "n_tokens": c.n_tokens,
         "retrieved_with": r.retrieved_with[u], "neighbours": _hits(r.neighbours[u]),
         "overlaps": None if r.overlaps is None else r.overlaps[u]}
        for u, c in enumerate(r.chunks)
    ]


def openapi_schema() -> dict[str, Any]:
    """The API's OpenAPI schema (the same for every store and option)."""
    return create_app("unused").openapi()


# ---------------------------------------------------------------------- running
def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the options come in ``$RAGSTORE_SERVER_CONFIG``."""
    cfg = json.loads(os.environ[ENV_CONFIG])
    return create_app(
        cfg["store"],
        readonly=cfg["readonly"],
        token=cfg.get("token"),
        embedder=cfg.get("embedder"),
        lock_timeout=cfg["lock_timeout"],
        max_body_bytes=cfg["max_body_bytes"],
        writer_uds=cfg.get("writer_uds"),
        threads=cfg.get("threads"),
    )


def _wait_for_writer(proc: subprocess.Popen, uds: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(transport=httpx.HTTPTransport(uds=uds), base_url="http://ragstore-writer", timeout=2.0) as c:
        while True:
            if proc.poll() is not None:
                raise RagstoreError(f"the writer process exited with code {proc.returncode} before it was ready (see its log above)")
            try:
                if c.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RagstoreError(f"the writer process did not start within {timeout:.0f}s")
            time.sleep(0.1)


def _watch_parent() -> None:
    """The writer ends itself if the serving process disappears (killed with SIGKILL)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="ragstore-parent-watch", daemon=True).start()


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down on SIGTERM, then re-raises it to the handler that was
    there before: make that one exit normally, so the store is closed (and its
    index saved) by the ``finally`` blocks instead of the process dying."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def serve(
    store: str | os.PathLike[str] | Store,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    workers: int = 1,
    readonly: bool = False,
    token: str | None = None,
    embedder: Any = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    log_level: str = "info",
    access_log: bool = True,
    uds: str | None = None,
    threads: int | None = None,
    keep_alive: float = DEFAULT_KEEP_ALIVE,
) -> None:
    """Serve ``store`` over HTTP until interrupted (SIGINT / SIGTERM).

    ``workers == 1``: one process answers everything; it takes the writer
    lock at its first write and keeps it until it stops.

    ``workers > 1``: uvicorn's worker processes each open the store
    read-only; unless ``readonly``, a writer process (this same app, one
    process) listens on a Unix socket in a private temporary folder and the
    workers forward every write to it. ``embedder`` must then be a spec string
    (e.g. "module:attr"), since each process loads its own.
    """
    import uvicorn

    _exit_cleanly_on_sigterm()
    if not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
    where = {"uds": uds} if uds else {"host": host, "port": port}
    if workers == 1:
        # opened here, not at the app's startup: a missing store or model is a clean error, not a traceback
        st = store if isinstance(store, Store) else Store(
            store, create=False, readonly=readonly, embedder=load_embedder(embedder), lock_timeout=lock_timeout
        )
        try:
            _ = st.embedder
            app = create_app(st, readonly=readonly, token=token, lock_timeout=lock_timeout,
                             max_body_bytes=max_body_bytes, threads=threads)
            uvicorn.run(app, log_level=log_level, access_log=access_log, timeout_keep_alive=int(keep_alive), **where)
        finally:
            if st is not store:
                st.close()
        return
    if isinstance(store, Store) or (embedder is not None and not isinstance(embedder, str)):
        raise InvalidInputError(
            "with workers > 1 each process opens the store itself: pass the store's path and the embedder "
            "as a spec string ('minilm', 'module:attr' ...), not objects"
        )
    path = os.path.abspath(os.fspath(store))
    with Store(path, create=False, readonly=True, embedder=load_embedder(embedder)) as st:
        _ = st.embedder  # fail here, once, rather than in every worker
    cfg: dict[str, Any] = {
        "store": path, "readonly": readonly, "token": token, "embedder": embedder,
        "lock_timeout": lock_timeout, "max_body_bytes": max_body_bytes, "writer_uds": None, "threads": threads,
    }
    sockdir = tempfile.mkdtemp(prefix="ragstore-writer-")  # 0700: only this user reaches the writer
    writer: subprocess.Popen | None = None
    try:
        if not readonly:
            cfg["writer_uds"] = os.path.join(sockdir, "writer.sock")
            cmd = [sys.executable, "-m", "ragstore.serving.http", path, "--uds", cfg["writer_uds"], "--writer",
                   "--lock-timeout", str(lock_timeout), "--max-body-mb", str(max_body_bytes / 1e6),
                   "--log-level", log_level, "--no-access-log"] + (["--threads", str(threads)] if threads else [])
            if embedder:
                cmd += ["--embedder", embedder]
            writer = subprocess.Popen(cmd)
            _wait_for_writer(writer, cfg["writer_uds"], timeout=600.0)  # it loads the index
        os.environ[ENV_CONFIG] = json.dumps(cfg)
        uvicorn.run("ragstore.serving.http:app_from_env", factory=True, workers=workers, log_level=log_level,
                    access_log=access_log, timeout_keep_alive=int(keep_alive), **where)
    finally:
        os.environ.pop(ENV_CONFIG, None)
        if writer is not None and writer.poll() is None:
            writer.terminate()
            try:
                writer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m ragstore.serving.http STORE [options]`` (``ragstore serve`` has the same options).

    ``python -m ragstore.serving.http --openapi`` prints the OpenAPI schema."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ragstore.serving.http", description="Serve a ragstore store over HTTP.")
    p.add_argument("store", nargs="?")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--uds", default=None, help="listen on this Unix socket instead of host:port")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--token", default=os.environ.get("RAGSTORE_TOKEN"))
    p.add_argument("--embedder", default=None)
    p.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT)
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY / 1e6)
    p.add_argument("--threads", type=int, default=None, help="reads served at once per process (default: CPUs)")
    p.add_argument("--keep-alive", type=float, default=DEFAULT_KEEP_ALIVE, help="seconds an idle connection is kept")
    p.add_argument("--log-level", default="info")
    p.add_argument("--no-access-log", action="store_true")
    p.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--openapi", action="store_true", help="print the OpenAPI schema and exit")
    a = p.parse_args(argv)
    if a.openapi:
        sys.stdout.write(json.dumps(openapi_schema(), indent=2, ensure_ascii=False) + "\n")
        return
    if not a.store:
        p.error("STORE is required")
    if a.writer:
        _watch_parent()
    try:
        serve(a.store, host=a.host, port=a.port, workers=a.workers, readonly=a.read_only, token=a.token,
              embedder=a.embedder, lock_timeout=a.lock_timeout, max_body_bytes=int(a.max_body_mb * 1e6),
              log_level=a.log_level, access_log=not a.no_access_log, uds=a.uds, threads=a.threads,
              keep_alive=a.keep_alive)
    except RagstoreError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
