"""Embedders named on a command line: registered specs, or ``module:attr`` imports.

The HTTP server, the MCP server and the CLI share :func:`load_embedder`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ..errors import EmbedderNotAvailableError, InvalidInputError
from . import base as _embed

__all__ = ["load_embedder"]


def load_embedder(spec: str | Any | None) -> Any:
    """An embedder from a spec, for servers started from the command line.

    None and embedder objects pass through; a registered spec ("minilm",
    "sentence-transformers:NAME", ...) is left for the store to resolve; any
    other "module:attr" is imported: an embedder object, or a zero-argument
    callable (such as a class) returning one.
    """
    if spec is None or not isinstance(spec, str):
        return spec
    prefix, sep, attr = spec.partition(":")
    if not sep or prefix in _embed.available() or prefix == "precomputed":
        return spec
    try:
        obj: Any = _import(prefix)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise EmbedderNotAvailableError(f"cannot import embedder {spec!r}: {e}") from None
    if not isinstance(obj, _embed.Embedder) and callable(obj):
        obj = obj()
    if not isinstance(obj, _embed.Embedder):
        raise InvalidInputError(
            f"{spec!r} is not an embedder (an object with name, dim, fingerprint, normalized, encode() "
            "and tokenizer_json()) nor a callable returning one"
        )
    return obj


def _import(module: str) -> Any:
    """``module`` imported; also from the current folder, as ``python -m`` and uvicorn find it.

    (A console script's ``sys.path`` starts with its bin folder, not the
    current one, so ``ragstore ingest --embedder my_embedder:Model`` would
    otherwise not find ``./my_embedder.py``.)
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != module.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module)
