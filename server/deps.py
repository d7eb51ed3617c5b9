"""`Annotated` dependency aliases used by every route."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.security import HTTPBearer
from fastapi.types import DecoratedCallable
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from channels import logctx
from models import User
from server.auth.service import AuthService
from server.auth.tokens import InvalidToken, TokenClaims
from server.cache import Cache
from server.config import Settings
from server.db import read_session_dependency, session_dependency
from server.errors import Forbidden, RateLimited, Unauthorized
from server.ratelimit import WriteLimit


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _auth(request: Request) -> AuthService:
    auth: AuthService = request.app.state.auth
    return auth


async def _cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


SettingsDep = Annotated[Settings, Depends(_settings)]
CacheDep = Annotated[Cache, Depends(_cache)]
SessionDep = Annotated[AsyncSession, Depends(session_dependency)]
ReadSessionDep = Annotated[AsyncSession, Depends(read_session_dependency)]
AuthDep = Annotated[AuthService, Depends(_auth)]

_CLAIMS = "kuda.claims"


def _verified(request: Request) -> TokenClaims:
    """The verified access token of a session that has not ended: a signature check and a
    dict lookup, no I/O (server/auth/sessions.py; docs/decisions.md D26). Verified once per
    request, however many dependencies ask."""
    scope = request.scope
    claims: TokenClaims | None = scope.get(_CLAIMS)
    if claims is not None:
        return claims
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Missing bearer token")
    auth: AuthService = request.app.state.auth
    try:
        claims = auth.codec.decode(token, "access")
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from exc
    auth.sessions.check(claims)
    logctx.bind(user_id=claims.user_id)  # the rest of the request's log lines name the user
    scope[_CLAIMS] = claims
    return claims


class _BearerClaims(HTTPBearer):
    """The verified claims, as one dependency node that is also the OpenAPI security scheme:
    FastAPI's per-request cost grows with the nodes of a route's dependency tree, so the
    token is not a chain of header -> credentials -> claims -> id (docs/decisions.md D38)."""

    async def __call__(self, request: Request) -> TokenClaims:  # type: ignore[override]
        return _verified(request)


class _BearerUserId(HTTPBearer):
    """The caller's id from the verified claims, also in one node."""

    async def __call__(self, request: Request) -> int:  # type: ignore[override]
        return _verified(request).user_id


_DESCRIPTION = "Access token from /api/v1/auth/token"
# One scheme in the OpenAPI document, as before: both nodes document the same "HTTPBearer".
_claims = _BearerClaims(scheme_name="HTTPBearer", description=_DESCRIPTION, auto_error=False)
_user_id = _BearerUserId(scheme_name="HTTPBearer", description=_DESCRIPTION, auto_error=False)


async def _current_user(
    request: Request, session: SessionDep, claims: Annotated[TokenClaims, Depends(_claims)]
) -> User:
    """The account row, for the routes that need more than the caller's id."""
    auth: AuthService = request.app.state.auth
    return await auth.account(session, claims)


async def _current_user_read(
    request: Request, session: ReadSessionDep, claims: Annotated[TokenClaims, Depends(_claims)]
) -> User:
    """The account row read in an autocommit session (no BEGIN/ROLLBACK round trips), for
    routes that only show it."""
    auth: AuthService = request.app.state.auth
    return await auth.account(session, claims)


async def _write_limit(request: Request, claims: Annotated[TokenClaims, Depends(_claims)]) -> None:
    limit: WriteLimit = request.app.state.write_limit
    retry_after = await limit.hit(claims.user_id)
    if retry_after is not None:
        raise RateLimited(
            retry_after, f"At most {limit.per_minute} new objects per minute; slow down"
        )


async def _client_ip_limit(request: Request, auth: AuthDep) -> None:
    ip = request.client.host if request.client else "unknown"
    await auth.check_ip(ip)


def _require_admin(user: User) -> User:
    if not user.is_admin:
        raise Forbidden("Administrators only")
    return user


async def _admin(user: Annotated[User, Depends(_current_user)]) -> User:
    return _require_admin(user)


async def _admin_read(user: Annotated[User, Depends(_current_user_read)]) -> User:
    """The check on the route's own read session: one pooled connection per request, not a
    write session for the check on top of the route's read session."""
    return _require_admin(user)


AccessClaims = Annotated[TokenClaims, Depends(_claims)]
UserId = Annotated[int, Depends(_user_id)]
"""The caller's id from a valid access token, without loading the account (read endpoints)."""
AdminUser = Annotated[User, Depends(_admin)]
ReadAdminUser = Annotated[User, Depends(_admin_read)]
"""An administrator, for read-only routes taking `ReadSessionDep` (the same session)."""
CurrentUser = Annotated[User, Depends(_current_user)]
ReadCurrentUser = Annotated[User, Depends(_current_user_read)]
"""The account, for read-only routes: not to be changed (its session does not commit)."""
AuthRateLimit = Depends(_client_ip_limit)
WriteRateLimit = Depends(_write_limit)
"""On every creating route: WRITE_RATE_PER_USER per user per minute (429 with Retry-After)."""

CREATED: dict[int | str, dict[str, Any]] = {201: {"description": "Created"}}


def creating(
    router: APIRouter, path: str, response_model: type[BaseModel]
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """The decorator of a creating POST (rides, bookings, reviews, messages, alerts): 201 with
    the new object, documented as such, behind `WriteRateLimit`."""
    return router.post(
        path,
        status_code=201,
        response_model=response_model,
        responses=CREATED,
        dependencies=[WriteRateLimit],
    )


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
