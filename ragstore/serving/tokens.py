"""The bearer-token check shared by ``ragstore serve`` and ``ragstore mcp --http``.

Starlette only (no FastAPI), so the MCP server, whose extra brings Starlette
and uvicorn but not FastAPI, checks tokens with the same code as the HTTP
server: a constant-time comparison, the same 401 body and
``WWW-Authenticate`` challenge whatever was wrong (missing header, another
scheme, a wrong token), and ``/health`` open to all.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from . import jsonenc

__all__ = ["BearerAuth", "CHALLENGE", "MESSAGE", "OPEN_PATHS"]

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ragstore"'}
MESSAGE = "this server needs 'Authorization: Bearer TOKEN' (the token given to ragstore serve/mcp --token)"
OPEN_PATHS = frozenset({"/health"})  # answered without a token


def _scheme_param(header: str | None) -> tuple[str, str]:
    """("Bearer", "TOKEN") from "Bearer TOKEN" (FastAPI's get_authorization_scheme_param)."""
    if not header:
        return "", ""
    scheme, _, param = header.partition(" ")
    return scheme, param


class BearerAuth:
    """The token a server wants (None: no authentication)."""

    def __init__(self, token: str | None) -> None:
        self._expected = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def accepts(self, credentials: str | None) -> bool:
        if self._expected is None:
            return True
        # constant time: the comparison does not tell how much of a guess was right
        return credentials is not None and hmac.compare_digest(credentials.strip().encode(), self._expected)

    def accepts_header(self, header: str | None) -> bool:
        """The check of ``require_token``, on a raw Authorization header."""
        scheme, credentials = _scheme_param(header)
        return self.accepts(credentials if scheme.lower() == "bearer" else None)

    @staticmethod
    def refusal() -> Response:
        """The 401: the server's JSON error body (``{"error", "message"}``) and the challenge."""
        body = jsonenc.dumps({"error": "Unauthorized", "message": MESSAGE}).encode("utf-8")
        return Response(body, status_code=401, headers=CHALLENGE, media_type="application/json")

    def refuse(self, request: Request) -> Response | None:
        """The 401 for ``request``, or None when its token is right (or none is needed)."""
        if not self.enabled or request.url.path in OPEN_PATHS:
            return None
        if self.accepts_header(request.headers.get("authorization")):
            return None
        return self.refusal()
