"""`Annotated` dependency aliases used by every route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from models import User
from server.auth.service import AuthService
from server.auth.tokens import InvalidToken, TokenClaims
from server.cache import Cache
from server.config import Settings
from server.db import read_session_dependency, session_dependency
from server.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/token")


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
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _token(credentials: Credentials) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Missing bearer token")
    return credentials.credentials


async def _claims(auth: AuthDep, token: Annotated[str, Depends(_token)]) -> TokenClaims:
    try:
        return auth.codec.decode(token, "access")
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from exc


async def _current_user(
    auth: AuthDep, session: SessionDep, claims: Annotated[TokenClaims, Depends(_claims)]
) -> User:
    return await auth.account(session, claims)


async def _client_ip_limit(request: Request, auth: AuthDep) -> None:
    ip = request.client.host if request.client else "unknown"
    await auth.check_ip(ip)


async def _admin(user: Annotated[User, Depends(_current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("Administrators only")
    return user


async def _user_id(claims: Annotated[TokenClaims, Depends(_claims)]) -> int:
    return claims.user_id


AccessClaims = Annotated[TokenClaims, Depends(_claims)]
UserId = Annotated[int, Depends(_user_id)]
"""The caller's id from a valid access token, without loading the account (read endpoints)."""
AdminUser = Annotated[User, Depends(_admin)]
CurrentUser = Annotated[User, Depends(_current_user)]
AuthRateLimit = Depends(_client_ip_limit)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
