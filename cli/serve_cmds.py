"""``ragstore serve`` (HTTP), ``ragstore mcp`` (Model Context Protocol over stdio or Streamable HTTP)
and the hidden ``ragstore serve-writer`` (the writer process of ``serve --workers N``).

Call :func:`register` with the CLI's Typer app to add them. The server
packages are optional extras, imported only when a command runs. The options
are the shared definitions of :mod:`.options`, their defaults
:class:`ragstore.serving.options.ServeOptions`'s.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from ragstore.serving.options import McpOptions, ServeOptions

from .options import (
    ACCESS_LOG_OPT,
    EMBEDDER_OPT,
    HOST_OPT,
    KEEP_ALIVE_OPT,
    LOCK_TIMEOUT_OPT,
    LOG_LEVEL_OPT,
    MAX_BODY_MB_OPT,
    PORT_OPT,
    READ_ONLY_OPT,
    STORE_ARG,
    THREADS_OPT,
    TOKEN_OPT,
    WORKERS_OPT,
    guarded,
    warn,
)

__all__ = ["register"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    store: Path = STORE_ARG,
    host: str = HOST_OPT,
    port: int = PORT_OPT,
    workers: int = WORKERS_OPT,
    read_only: bool = READ_ONLY_OPT,
    token: str | None = TOKEN_OPT,
    embedder: str | None = EMBEDDER_OPT,
    lock_timeout: float = LOCK_TIMEOUT_OPT,
    threads: int | None = THREADS_OPT,
    max_body_mb: float = MAX_BODY_MB_OPT,
    keep_alive: float = KEEP_ALIVE_OPT,
    log_level: str = LOG_LEVEL_OPT,
    access_log: bool = ACCESS_LOG_OPT,
) -> None:
    """Serve a store over HTTP (JSON API; OpenAPI schema at /openapi.json, docs at /docs)."""
    from ragstore.serving.runner import run

    if not _is_loopback(host) and not token:
        warn(f"serving on {host} without --token: anyone who can reach this address can read"
             + ("" if read_only else " and write") + " the store")
    run(ServeOptions(
        store=str(store), host=host, port=port, workers=workers, readonly=read_only, token=token or None,
        embedder=embedder, lock_timeout=lock_timeout, max_body_bytes=int(max_body_mb * 1_000_000),
        log_level=log_level.lower(), access_log=access_log, threads=threads, keep_alive=keep_alive,
    ))


def serve_writer() -> None:
    """The writer process of `ragstore serve --workers N` (started by it; options in $RAGSTORE_SERVER_CONFIG)."""
    from ragstore.serving.runner import run_writer

    run_writer()


HTTP_OPT = typer.Option(
    McpOptions.http, "--http",
    help="Speak MCP's Streamable HTTP transport at http://HOST:PORT/mcp instead of stdio "
    "(--host, --port, --token and --log-level apply only with it).",
)


def mcp(
    store: Path = STORE_ARG,
    read_only: bool = READ_ONLY_OPT,
    embedder: str | None = EMBEDDER_OPT,
    lock_timeout: float = LOCK_TIMEOUT_OPT,
    http: bool = HTTP_OPT,
    host: str = HOST_OPT,
    port: int = PORT_OPT,
    token: str | None = TOKEN_OPT,
    log_level: str = LOG_LEVEL_OPT,
) -> None:
    """Serve a store as Model Context Protocol tools over stdio, or Streamable HTTP with --http (for LLM apps)."""
    from ragstore.serving.mcp import run_http, run_stdio

    opts = McpOptions(store=str(store), readonly=read_only, embedder=embedder, lock_timeout=lock_timeout,
                      http=http, host=host, port=port, token=token or None, log_level=log_level.lower())
    if not opts.http:
        run_stdio(opts.store, readonly=opts.readonly, embedder=opts.embedder, lock_timeout=opts.lock_timeout)
        return
    if not _is_loopback(opts.host) and not opts.token:
        warn(f"serving MCP on {opts.host} without --token: anyone who can reach this address can read"
             + ("" if opts.readonly else " and write") + " the store")
    run_http(opts)


def register(app: typer.Typer) -> None:
    """Add the ``serve``, ``mcp`` and hidden ``serve-writer`` commands to ``app``."""
    # ImportError: a missing extra, said in one line
    app.command("serve")(guarded(serve, user_errors=(ImportError,)))
    app.command("mcp")(guarded(mcp, user_errors=(ImportError,)))
    app.command("serve-writer", hidden=True)(guarded(serve_writer, user_errors=(ImportError,)))
