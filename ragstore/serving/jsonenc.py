"""The one JSON encoding of ragstore's outputs (HTTP bodies, MCP results, ``--json``).

Strict JSON: NaN and infinity are refused (they are not JSON), bytes in
metadata written by the library come out as hex, numpy values as numbers and
lists, dataclass results (``Hit``, ``Stats`` ...) as objects.
"""

from __future__ import annotations

import dataclasses
import json
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
    """Strict JSON text; compact unless ``indent`` is given."""
    return json.dumps(
        obj,
        ensure_ascii=False,
        allow_nan=False,
        indent=indent,
        separators=None if indent is not None else (",", ":"),
        default=default,
    )


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (what :func:`dumps` would write)."""
    return json.loads(dumps(obj))
