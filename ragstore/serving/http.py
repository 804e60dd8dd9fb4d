"""HTTP server: a JSON API over one store (FastAPI on uvicorn).

Install with ``pip install 'ragstore[server]'``; run with ``ragstore serve STORE``.
See docs/server.md. This module is the door; the parts are:

- :mod:`.app`: :func:`create_app` builds the ASGI app over a store path or an
  open :class:`~ragstore.Store` (pass ``embedder=`` for a store made with a
  custom embedder object);
- :mod:`.routes` (the routers), :mod:`.models` (request and response models),
  :mod:`.auth` (bearer token), :mod:`.middleware` (body limit, JSON errors),
  :mod:`.backend` (the store, threads, forwarding writes);
- :mod:`.runner`: :func:`serve` runs the app with uvicorn, with ``workers > 1``
  as read-only workers that forward writes to one writer process.

Errors are JSON ``{"error": NAME, "message": TEXT}`` with the status of
:data:`ERROR_STATUS`; an unexpected exception is logged with its traceback and
answered with a generic 500, never the traceback.

``python -m ragstore.serving.http ARGS`` is ``ragstore serve ARGS``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401 - the extra's check, before the parts import it
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"the ragstore HTTP server needs the 'server' extra ({e.name} is missing): "
        "pip install 'ragstore[server]'"
    ) from e

from ..embedders.loading import load_embedder
from .app import app_from_env, create_app, openapi_schema
from .middleware import ERROR_STATUS
from .options import ENV_CONFIG, ServeOptions
from .runner import serve

__all__ = ["create_app", "serve", "app_from_env", "openapi_schema", "load_embedder", "ERROR_STATUS", "ENV_CONFIG",
           "ServeOptions"]


if __name__ == "__main__":
    # the CLI is the one argument parser: this is `ragstore serve`
    import sys

    from ragstore_cli.app import main

    main(["serve", *sys.argv[1:]])
