"""Bearer-token authentication: a FastAPI dependency over ``HTTPBearer``.

``HTTPBearer`` puts the scheme in the OpenAPI schema
(``components.securitySchemes``), so clients and generated SDKs know to send
``Authorization: Bearer TOKEN``. It is used with ``auto_error=False``: the
server answers a missing or wrong token itself, with its JSON error body and
``WWW-Authenticate``, the same 401 whatever was wrong.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .middleware import error_response

__all__ = ["BearerAuth", "bearer_scheme", "require_token"]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="Needed only when the server was started with `--token TOKEN` (or `$RAGSTORE_TOKEN`).",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ragstore"'}
_MESSAGE = "this server needs 'Authorization: Bearer TOKEN' (the token given to ragstore serve --token)"


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
        """The check of :func:`require_token`, on a raw Authorization header."""
        scheme, credentials = get_authorization_scheme_param(header)
        return self.accepts(credentials if scheme.lower() == "bearer" else None)

    @staticmethod
    def refusal() -> Response:
        return error_response(401, "Unauthorized", _MESSAGE, headers=_CHALLENGE)

    def refuse(self, request: Request) -> Response | None:
        """The 401 for ``request``, or None when its token is right (or none is needed)."""
        if not self.enabled or request.url.path == "/health":
            return None
        if self.accepts_header(request.headers.get("authorization")):
            return None
        return self.refusal()


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> None:
    """Dependency of every route but ``/health``: the app's :class:`BearerAuth` must accept the request."""
    auth: BearerAuth = request.app.state.auth
    if not auth.accepts(credentials.credentials if credentials is not None else None):
        # answered by middleware's handler of HTTP errors, as Starlette's own are
        raise StarletteHTTPException(401, _MESSAGE, headers=_CHALLENGE)
