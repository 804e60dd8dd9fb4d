"""Bearer-token authentication: a FastAPI dependency over ``HTTPBearer``.

``HTTPBearer`` puts the scheme in the OpenAPI schema
(``components.securitySchemes``), so clients and generated SDKs know to send
``Authorization: Bearer TOKEN``. It is used with ``auto_error=False``: the
server answers a missing or wrong token itself, with its JSON error body and
``WWW-Authenticate``, the same 401 whatever was wrong. :class:`BearerAuth` itself lives in
:mod:`.tokens` (no FastAPI), shared with ``ragstore mcp --http``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .tokens import CHALLENGE, MESSAGE, BearerAuth

__all__ = ["BearerAuth", "bearer_scheme", "require_token"]

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="Needed only when the server was started with `--token TOKEN` (or `$RAGSTORE_TOKEN`).",
)


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> None:
    """Dependency of every route but ``/health``: the app's :class:`BearerAuth` must accept the request."""
    auth: BearerAuth = request.app.state.auth
    if not auth.accepts(credentials.credentials if credentials is not None else None):
        # answered by middleware's handler of HTTP errors, as Starlette's own are
        raise StarletteHTTPException(401, MESSAGE, headers=CHALLENGE)
