"""One definition of the serving options, their defaults and their JSON form.

The CLI (``ragstore serve`` / ``ragstore mcp``) builds these from its
arguments; :func:`ragstore.serving.http.serve` hands the same object, as JSON
in one environment variable, to the worker and writer processes it starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from . import jsonenc

__all__ = ["ServeOptions", "McpOptions", "ENV_CONFIG"]

ENV_CONFIG = "RAGSTORE_SERVER_CONFIG"


@dataclass(frozen=True)
class ServeOptions:
    """How ``ragstore serve`` runs. Every default is defined here once."""

    store: str
    host: str = "127.0.0.1"
    port: int = 8765
    uds: str | None = None
    workers: int = 1
    readonly: bool = False
    token: str | None = None
    embedder: str | None = None
    lock_timeout: float = 10.0  # seconds a write waits for another process's writer lock (then 423)
    max_body_bytes: int = 64_000_000
    threads: int | None = None  # reads served at once per process; None: the number of CPUs
    # Longer than clients keep idle connections (httpx: 5 s, aiohttp: 15 s), so that the
    # client, not the server, closes them: with uvicorn's 5 s default an idle connection
    # closed by the server just as the client reuses it fails the request (ReadError).
    keep_alive: float = 75.0
    log_level: str = "info"
    access_log: bool = True
    writer_uds: str | None = None  # set by serve() for workers: forward writes to this writer

    def replace(self, **changes: object) -> ServeOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return jsonenc.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        return cls(**json.loads(text))

    def to_env(self, env: dict[str, str] | os._Environ[str]) -> None:
        env[ENV_CONFIG] = self.to_json()

    @classmethod
    def from_env(cls) -> ServeOptions:
        return cls.from_json(os.environ[ENV_CONFIG])


@dataclass(frozen=True)
class McpOptions:
    """How ``ragstore mcp`` runs: over stdio, or over Streamable HTTP with ``http=True``.

    The HTTP fields share :class:`ServeOptions`'s defaults (and the CLI's
    options): ``ragstore mcp --http`` binds, authenticates and logs as
    ``ragstore serve`` does.
    """

    store: str
    readonly: bool = False
    embedder: str | None = None
    lock_timeout: float = ServeOptions.lock_timeout
    http: bool = False
    host: str = ServeOptions.host
    port: int = ServeOptions.port
    token: str | None = ServeOptions.token
    log_level: str = ServeOptions.log_level
    path: str = "/mcp"  # the Streamable HTTP endpoint (the SDK's default)

    def replace(self, **changes: object) -> McpOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
