"""Embedders: what turns chunk text into vectors.

A store records the embedder that made it (name, dimension, fingerprint of the
weights) and refuses to mix: vectors from two models are not comparable.

An embedder is any object with this shape (see :class:`Embedder`):

- ``name``: a spec string that :func:`resolve` turns back into the embedder
  (``"minilm"``, ``"sentence-transformers:NAME"``, ``"onnx:PATH"`` ...);
- ``dim``: the vector dimension;
- ``fingerprint``: a short hex digest identifying the weights;
- ``normalized``: whether ``encode`` returns unit-length vectors;
- ``encode(texts) -> float32 array (len(texts), dim)``;
- ``tokenizer_json()``: the serialized tokenizer.json to chunk with by default,
  or None.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import EmbedderNotAvailableError, InvalidInputError

__all__ = [
    "Embedder",
    "CallableEmbedder",
    "Precomputed",
    "register",
    "resolve",
    "available",
    "DEFAULT_EMBEDDER",
]

DEFAULT_EMBEDDER = "minilm"


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    fingerprint: str
    normalized: bool

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def tokenizer_json(self) -> str | None: ...


class CallableEmbedder:
    """Wraps any ``fn(list[str]) -> array`` as an embedder.

    ``name`` must be stable across runs: the store records it and refuses
    another. Give ``fingerprint`` if the function's weights can change under
    the same name.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], object],
        *,
        dim: int,
        name: str,
        fingerprint: str | None = None,
        normalized: bool = False,
        tokenizer_json: str | None = None,
    ) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        if not name or ":" in name and name.split(":", 1)[0] in _REGISTRY:
            raise InvalidInputError(
                f"embedder name {name!r} is empty or clashes with a built-in; choose another name"
            )
        self._fn = fn
        self.dim = dim
        self.name = name
        self.fingerprint = fingerprint or hashlib.sha256(name.encode()).hexdigest()[:16]
        self.normalized = normalized
        self._tokenizer_json = tokenizer_json

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.asarray(self._fn(list(texts)), dtype=np.float32)
        if out.ndim != 2 or out.shape != (len(texts), self.dim):
            raise InvalidInputError(
                f"embedder {self.name!r} returned shape {out.shape}, expected {(len(texts), self.dim)}"
            )
        return np.ascontiguousarray(out)

    def tokenizer_json(self) -> str | None:
        return self._tokenizer_json

    def __repr__(self) -> str:
        return f"CallableEmbedder(name={self.name!r}, dim={self.dim})"


class Precomputed:
    """For stores fed only precomputed vectors: text queries are refused."""

    normalized = False

    def __init__(self, dim: int, *, name: str = "precomputed", tokenizer_json: str | None = None) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.name = name if name.startswith("precomputed") else f"precomputed:{name}"
        self.fingerprint = hashlib.sha256(f"{self.name}/{dim}".encode()).hexdigest()[:16]
        self._tokenizer_json = tokenizer_json

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidInputError(
            "this store holds precomputed vectors and has no embedder: pass vectors= to add() "
            "and a vector to query(), or create the store with an embedder"
        )

    def tokenizer_json(self) -> str | None:
        return self._tokenizer_json

    def __repr__(self) -> str:
        return f"Precomputed(dim={self.dim})"


# spec prefix -> factory(argument) ; "minilm" has no argument.
_REGISTRY: dict[str, Callable[[str], Embedder]] = {}


def register(prefix: str, factory: Callable[[str], Embedder]) -> None:
    """Make ``resolve("PREFIX:ARG")`` (or ``resolve("PREFIX")``) call ``factory(ARG)``."""
    _REGISTRY[prefix] = factory


def available() -> list[str]:
    return sorted(_REGISTRY)


def resolve(spec: "str | Embedder") -> Embedder:
    """Turn a spec string (or an embedder object) into an embedder."""
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise InvalidInputError(
            f"embedder must be a spec string such as 'minilm' or an object with name, dim, "
            f"fingerprint, normalized, encode() and tokenizer_json(); got {type(spec).__name__}"
        )
    prefix, _, arg = spec.partition(":")
    if prefix == "precomputed":
        raise InvalidInputError(
            f"store uses precomputed vectors ({spec}); open it with embedder=ragstore.embed.Precomputed(dim)"
        )
    factory = _REGISTRY.get(prefix)
    if factory is None:
        raise EmbedderNotAvailableError(
            f"unknown embedder {spec!r}; known: {', '.join(available())}. "
            "Pass an embedder object for a custom model."
        )
    return factory(arg)


def _minilm(arg: str) -> Embedder:
    from .minilm import MiniLM  # numpy encoder; imported lazily (weights load)

    return MiniLM(arg or None)


register("minilm", _minilm)
