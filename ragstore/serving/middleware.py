"""What stands between a request and the routes: the body-size limit, the JSON
error bodies and the last-resort handler.

Every error is ``{"error": NAME, "message": TEXT}`` (plus ``details`` for
request validation) with the status of :data:`ERROR_STATUS`. Messages sent to
clients never hold server paths or tracebacks: :func:`public_message` takes
the store's path out (the server log keeps the full message), and an
unexpected exception is logged with its traceback and answered with a generic
500 under a short reference.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response

from ..errors import (
    AlreadyExistsError,
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
from . import jsonenc

__all__ = [
    "ERROR_STATUS",
    "JSONResponse",
    "BodyLimit",
    "error_response",
    "install_error_handlers",
    "public_message",
    "status_of",
    "configure_logging",
]

log = logging.getLogger("ragstore.serving.http")

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
    # the server's disk, not the request: 507 tells a client that retrying the same
    # write will not help until space is freed; 503 that the store may come back
    (DiskFullError, 507),
    (StoreNotWritableError, 503),
    (StorageError, 503),
    (RagstoreError, 400),
]

# Starlette's own errors (routing, body parsing) by status
_HTTP_NAMES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
               413: "PayloadTooLarge", 422: "ValidationError"}


def status_of(exc: RagstoreError) -> int:
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 400  # pragma: no cover - RagstoreError is last


class JSONResponse(_StarletteJSONResponse):
    """Every body the server writes, encoded by :mod:`ragstore.serving.jsonenc`."""

    def render(self, content: Any) -> bytes:
        return jsonenc.dumps(content).encode("utf-8")


def error_response(status: int, name: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": name, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


# an absolute path that is not inside quotes (document ids are quoted with repr)
_ABS_PATH = re.compile(r"(?<![\w'\"/])/(?:[^\s'\",;:()/]+/)+[^\s'\",;:()]*")


def public_message(message: str, paths: Iterable[str]) -> str:
    """``message`` without the server's paths: "store /srv/x is closed" -> "the store is closed".

    Engine messages name the store by its path; a client has no use for it and
    should not learn the server's file layout."""
    for p in sorted({p.rstrip("/") for p in paths if p and p != "/"}, key=len, reverse=True):
        esc = re.escape(p)
        # a command line the message suggests: `ragstore check P` -> `ragstore check STORE`
        message = re.sub(rf"(`ragstore [^`]*?){esc}", r"\1STORE", message)
        # "store P", "the store at P", "P" (and files under it) all become "the store"
        message = re.sub(rf"(?:\bthe )?(?:\bstore (?:at )?)?{esc}(?:/[^\s'\",;:()]*)?", "the store", message)
    return _ABS_PATH.sub("<path>", message)


def install_error_handlers(app: FastAPI, *, paths: Callable[[], Iterable[str]],
                           refuse: Callable[[Request], Response | None]) -> None:
    """JSON error bodies for library errors, validation errors and Starlette's own.

    ``paths()`` names the paths to keep out of messages; ``refuse(request)``
    is the token check, answered first: a request without the token learns
    nothing, not even that its body was malformed or its route unknown."""

    @app.exception_handler(RagstoreError)
    async def _ragstore_error(request: Request, exc: RagstoreError) -> Response:
        status = status_of(exc)
        # the full message (with paths) stays in the log
        if status >= 500:
            log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        else:
            log.info("%d %s on %s %s: %s", status, type(exc).__name__, request.method, request.url.path, exc)
        return error_response(status, type(exc).__name__, public_message(str(exc), paths()))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        denied = refuse(request)
        if denied is not None:
            return denied
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))} for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(422, "ValidationError", f"the request body is not valid JSON: {first['msg']}",
                                  details)
        where = ".".join(p for p in first["loc"] if p != "body") or "body"
        return error_response(422, "ValidationError", f"{where}: {first['msg']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 401:
            denied = refuse(request)
            if denied is not None:
                return denied
        if exc.status_code == 400:
            # FastAPI's answer to a body json.loads cannot take (invalid UTF-8,
            # nesting past the parser's depth): malformed JSON like any other, 422
            return error_response(422, "ValidationError",
                                  "the request body is not valid JSON (invalid UTF-8, or nested too deeply)")
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, name, str(exc.detail),
                              headers=dict(exc.headers) if exc.headers else None)


class BodyLimit:
    """ASGI middleware: the request-body limit (413) and the last-resort handler.

    The body is counted as it arrives, so an oversized one is refused after
    ``max_body`` bytes whatever its Content-Length says. An exception no
    handler took is logged with its traceback under a reference and answered
    with a generic 500 (when the response has not started)."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
                await error_response(
                    500, "InternalError", f"internal server error (reference {ref}; see the server log)"
                )(scope, receive, send)


def configure_logging(level: str) -> None:
    """The server's own messages (errors answered, writer restarts) on stderr at
    uvicorn's ``--log-level``: uvicorn configures only its own loggers, and the
    full messages that clients get without paths are kept here."""
    logger = logging.getLogger("ragstore")
    if logger.handlers:  # an application embedding the server configured it
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
