"""The one JSON encoding of ragstore's outputs (HTTP bodies, MCP results, ``--json``).

Strict JSON: NaN and infinity are not JSON, so they come out as null (the
library refuses them in new metadata, but a store written before it checked
may hold them, and a reply must still parse); bytes in metadata written by
the library come out as hex, numpy values as numbers and
lists, dataclass results (``Hit``, ``Stats`` ...) as objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

__all__ = ["default", "dumps", "to_jsonable"]


def default(o: Any) -> Any:
    """``json.dumps(default=)`` for what ragstore returns."""
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).hex()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON text (NaN and infinities as null); compact unless ``indent`` is given."""
    separators = None if indent is not None else (",", ":")
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent, separators=separators,
                          default=default)
    except ValueError:  # "Out of range float values are not JSON compliant": the rare slow path
        plain = _finite(json.loads(json.dumps(obj, allow_nan=True, default=default)))
        return json.dumps(plain, ensure_ascii=False, allow_nan=False, indent=indent, separators=separators)


def _finite(v: Any) -> Any:
    """``v`` (plain JSON values) with NaN and infinities replaced by None."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (what :func:`dumps` would write)."""
    return json.loads(dumps(obj))
