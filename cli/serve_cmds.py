"""``ragstore serve`` (HTTP) and ``ragstore mcp`` (Model Context Protocol over stdio).

Call :func:`register` with the CLI's Typer app to add both commands. The
server packages are optional extras, imported only when a command runs.
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ragstore.errors import RagstoreError

__all__ = ["register"]

EXIT_USER = 1
EXIT_INTERRUPTED = 130


def _error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors and a missing extra exit 1 with the message; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        try:
            return fn(*a, **k)
        except RagstoreError as e:
            _error(str(e))
            raise typer.Exit(EXIT_USER) from None
        except ImportError as e:
            _error(str(e))
            raise typer.Exit(EXIT_USER) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


STORE_HELP = "Path of the store (a folder)."
EMBEDDER_HELP = (
    "Embedder to open the store with, for stores made with a custom one: a registered spec "
    "('minilm', 'sentence-transformers:NAME') or an import path 'module:attr' naming an embedder "
    "object or a zero-argument callable returning one. Default: the store's own."
)


def serve(
    store: Path = typer.Argument(..., metavar="STORE", help=STORE_HELP, show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(
        1, "--workers", min=1,
        help="Worker processes. With more than one, each reads the store itself and writes go to one "
        "writer process over a private Unix socket.",
    ),
    read_only: bool = typer.Option(False, "--read-only", help="Open the store read-only; writes get 403."),
    token: str | None = typer.Option(
        None, "--token", envvar="RAGSTORE_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on every request but GET /health (or set $RAGSTORE_TOKEN).",
    ),
    embedder: str | None = typer.Option(None, "--embedder", help=EMBEDDER_HELP),
    lock_timeout: float = typer.Option(
        10.0, "--lock-timeout", min=0.0,
        help="Seconds a write waits for another process's writer lock before answering 423.",
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Reads served at once by each process (default: the number of CPUs)."
    ),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", min=0.001, help="Largest request body, in MB (413 over it)."),
    keep_alive: float = typer.Option(
        75.0, "--keep-alive", min=1.0, help="Seconds an idle keep-alive connection stays open (longer than clients keep theirs)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical, error, warning, info, debug."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
) -> None:
    """Serve a store over HTTP (JSON API; OpenAPI schema at /openapi.json, docs at /docs)."""
    from ragstore.serving.http import serve as run_server

    if not _is_loopback(host) and not token:
        _warn(f"serving on {host} without --token: anyone who can reach this address can read"
              + ("" if read_only else " and write") + " the store")
    run_server(
        str(store), host=host, port=port, workers=workers, readonly=read_only, token=token or None,
        embedder=embedder, lock_timeout=lock_timeout, max_body_bytes=int(max_body_mb * 1_000_000),
        log_level=log_level.lower(), access_log=access_log, threads=threads,
        keep_alive=keep_alive,
    )


def mcp(
    store: Path = typer.Argument(..., metavar="STORE", help=STORE_HELP, show_default=False),
    read_only: bool = typer.Option(False, "--read-only", help="Expose only the read tools (search, get_document, stats)."),
    embedder: str | None = typer.Option(None, "--embedder", help=EMBEDDER_HELP),
    lock_timeout: float = typer.Option(10.0, "--lock-timeout", min=0.0, help="Seconds a write waits for the writer lock."),
) -> None:
    """Serve a store as Model Context Protocol tools over stdio (for LLM apps)."""
    from ragstore.serving.mcp import run_stdio

    run_stdio(str(store), readonly=read_only, embedder=embedder, lock_timeout=lock_timeout)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` and ``mcp`` commands to ``app``."""
    app.command("serve")(_guarded(serve))
    app.command("mcp")(_guarded(mcp))
