"""Checks of what callers hand the engine: ids, sources, metadata, vectors, documents.

Each check raises :class:`InvalidInputError` saying what is wrong and how to
mend it, before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from ..config import MAX_DOC_ID_BYTES, MAX_SOURCE_BYTES, MAX_SOURCE_CHARS, StoreConfig
from ..errors import InvalidInputError
from ..types import Doc
from .records import pack

__all__ = [
    "check_doc_id",
    "check_source",
    "check_meta",
    "MAX_META_DEPTH",
    "check_positive_int",
    "coerce_doc",
    "content_hash",
    "check_source_filter",
    "VectorRules",
]


def _utf8(value: str, what: str) -> bytes:
    """``value``'s UTF-8 bytes; a lone surrogate (which UTF-8 cannot hold) is refused."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what} {value[:80]!r} holds an unpaired surrogate at character {e.start}: it is not valid "
            "Unicode text (decode your input with errors='replace', or fix its encoding)"
        ) from None


def check_doc_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        raise InvalidInputError(f"document id must be a non-empty str, got {doc_id!r}")
    # bytes, not characters: the id is an LMDB key, limited to 511 bytes
    b = _utf8(doc_id, "document id")
    if len(b) > MAX_DOC_ID_BYTES:
        raise InvalidInputError(
            f"document id is {len(b)} bytes long in UTF-8; at most {MAX_DOC_ID_BYTES} are allowed (hash longer ids)"
        )
    return doc_id


def check_source(source: object) -> str:
    """A source name, or "" for None (documents without a source)."""
    if source is None:
        return ""
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE_CHARS or "\x00" in source:
        raise InvalidInputError(
            f"source must be None or a non-empty str of at most {MAX_SOURCE_CHARS} characters without NUL, "
            f"got {source if not isinstance(source, str) else source[:80]!r}"
        )
    # bytes, not characters: the source is part of an LMDB key (b"s" + source, at most 511 bytes)
    b = _utf8(source, "source")
    if len(b) > MAX_SOURCE_BYTES:
        raise InvalidInputError(
            f"source {source[:40]!r}... is {len(b)} bytes long in UTF-8; at most {MAX_SOURCE_BYTES} are allowed "
            "(use a shorter name)"
        )
    return source


def check_source_filter(source: object) -> str:
    """A source name to select by: as :func:`check_source`, and "" for the documents without one.

    :meth:`Store.sources` reports those documents under "", so "" selects them
    wherever a source is asked for (``query(sources=[""])``, ``doc_ids(source="")``).
    """
    return "" if source == "" else check_source(source)


def check_meta(meta: object) -> dict:
    """Metadata as JSON can carry it (and bytes, kept as they are), refused otherwise.

    Every door prints metadata as strict JSON (the CLI's ``--json``, HTTP, MCP),
    so what JSON cannot hold is refused here, before anything is written: NaN
    and infinity (``json`` would print ``NaN``, which no JSON parser reads),
    keys other than str, other types (sets, objects, numpy arrays), lone
    surrogates, and nesting deeper than :data:`MAX_META_DEPTH`.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidInputError(f"meta must be a dict, got {type(meta).__name__}")
    meta = dict(meta)
    _check_json(meta, "meta", 0)
    try:
        pack(meta)
    except (TypeError, ValueError, OverflowError) as e:  # an int beyond msgpack's 64 bits
        raise InvalidInputError(f"meta is not serializable (JSON values and bytes): {e}") from None
    return meta


MAX_META_DEPTH = 32  # nested dicts and lists: deeper is a bug in the caller, and recursion has limits


def _check_json(v: Any, where: str, depth: int) -> None:
    if depth > MAX_META_DEPTH:
        raise InvalidInputError(f"{where} is nested more than {MAX_META_DEPTH} levels deep; flatten the metadata")
    if v is None or isinstance(v, (bool, int, bytes)):
        return
    if isinstance(v, str):
        _utf8(v, where)
    elif isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise InvalidInputError(
                f"{where} is {v!r}, which JSON cannot represent: store null or a string instead"
            )
    elif isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"meta keys must be str: {where} has the key {k!r} ({type(k).__name__})")
            _utf8(k, f"key of {where}")
            _check_json(x, f"{where}[{k[:40]!r}]", depth + 1)
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_json(x, f"{where}[{i}]", depth + 1)
    else:
        raise InvalidInputError(
            f"{where} is a {type(v).__name__}, which JSON cannot hold: use str, numbers, true/false, "
            "null, lists, dicts (or bytes)"
        )


def check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def coerce_doc(d: Any, i: int) -> Doc:
    """A :class:`Doc` from what ``add_many`` accepts: a Doc, a mapping or an (id, text) pair."""
    if isinstance(d, Doc):
        return d
    if isinstance(d, Mapping):
        if "id" not in d or "text" not in d:
            raise InvalidInputError(f"document #{i} lacks an 'id' or 'text' field")
        return Doc(d["id"], d["text"], d.get("source"), d.get("meta"), d.get("vectors"))
    if isinstance(d, tuple) and len(d) == 2:
        return Doc(d[0], d[1])
    raise InvalidInputError(f"document #{i} must be a ragstore.Doc, a mapping or an (id, text) pair")


def _canonical(obj: Any) -> Any:
    """Meta with dict keys sorted, so equal dicts hash equal whatever their order."""
    if isinstance(obj, Mapping):
        return [[k, _canonical(obj[k])] for k in sorted(obj)]
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    return obj


def content_hash(text: str, source: str, meta: dict) -> str:
    """What decides whether a re-added document is unchanged (and skipped)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(text.encode("utf-8"))
    h.update(b"\x00" + source.encode() + b"\x00")
    h.update(msgpack.packb(_canonical(meta), use_bin_type=True))
    return h.hexdigest()


class VectorRules:
    """Vectors as the store takes them: its dimension, finite, unit length for cosine."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config

    def check(self, vectors: object, n: int | None, what: str = "vectors") -> np.ndarray:
        """A C-contiguous float32 (n, dim) array, normalized for cosine stores."""
        d = self.config.dim
        try:
            arr = np.asarray(vectors)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{what} is not an array: {e}") from None
        if arr.dtype.kind not in "fiu":
            raise InvalidInputError(f"{what} must be numbers, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != d or (n is not None and arr.shape[0] != n):
            want = f"({n}, {d})" if n is not None else f"(n, {d})"
            raise InvalidInputError(
                f"{what} have shape {arr.shape}, expected {want}"
                + (f": this text makes {n} chunks (see Store.chunk())" if n is not None else "")
                + f"; the store's embedder {self.config.embedder!r} has dimension {d}"
            )
        wide = np.asarray(arr, dtype=np.float64)  # float64: huge or tiny values normalize without over/underflow
        if not np.isfinite(wide).all():
            raise InvalidInputError(f"{what} contain NaN or infinity")
        if self.config.metric == "cos":
            norms = np.linalg.norm(wide, axis=1, keepdims=True)
            if (norms == 0).any():
                raise InvalidInputError(f"{what} contain an all-zero vector, which has no cosine direction")
            wide = wide / norms
        elif (np.abs(wide) > np.finfo(np.float32).max).any():
            raise InvalidInputError(f"{what} hold values beyond float32's range (about 3.4e38)")
        return np.ascontiguousarray(wide, dtype=np.float32)
