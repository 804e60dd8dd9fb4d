"""Embedders: the protocol, the registry of spec strings, and the models.

- :mod:`.base`: the :class:`Embedder` protocol, :class:`CallableEmbedder`,
  :class:`Precomputed`, the registry (:func:`register`, :func:`resolve`) and
  the sentence-transformers and ONNX adapters;
- :mod:`.minilm`: all-MiniLM-L6-v2 in numpy, the default;
- :mod:`.loading`: :func:`load_embedder`, specs given on a command line
  (``module:attr`` imports).
"""

from .base import (
    DEFAULT_EMBEDDER,
    CallableEmbedder,
    Embedder,
    OnnxEmbedder,
    Precomputed,
    SentenceTransformerEmbedder,
    available,
    register,
    resolve,
    unregister,
)
from .loading import load_embedder

__all__ = [
    "Embedder",
    "CallableEmbedder",
    "Precomputed",
    "register",
    "unregister",
    "resolve",
    "available",
    "load_embedder",
    "DEFAULT_EMBEDDER",
    "SentenceTransformerEmbedder",
    "OnnxEmbedder",
]
