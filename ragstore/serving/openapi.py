"""``python -m ragstore.serving.openapi > docs/openapi.json``: the API's OpenAPI schema.

The schema is the same for every store and option; tests/test_server.py
compares the served one with the committed docs/openapi.json.
"""

from __future__ import annotations

import sys

from . import jsonenc
from .app import openapi_schema

__all__ = ["schema_text"]


def schema_text() -> str:
    """The schema as the committed file holds it (indented, UTF-8, final newline)."""
    return jsonenc.dumps(openapi_schema(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
