"""Embedders named on a command line: registered specs, or ``module:attr`` imports.

The HTTP server, the MCP server and the CLI share :func:`load_embedder`.
"""

from __future__ import annotations

import importlib
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
        obj: Any = importlib.import_module(prefix)
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
