from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Form, Request, Response, status

from server.auth.schemas import RefreshIn, RegisterIn, TicketOut, TokenPair
from server.deps import AccessClaims, AuthDep, AuthRateLimit, SessionDep
from server.users.schemas import Me
from server.validation import Text

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[AuthRateLimit])

DEVICE_COOKIE = "kuda_device"
DEVICE_COOKIE_PATH = "/api/v1/auth"


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=Me)
async def register(data: RegisterIn, auth: AuthDep) -> object:
    return await auth.register(data)


@router.post("/token", response_model=TokenPair)
async def token(
    request: Request,
    response: Response,
    username: Annotated[Text, Form(min_length=1, max_length=320)],
    password: Annotated[Text, Form(min_length=1, max_length=128)],
    auth: AuthDep,
    device: Annotated[str | None, Cookie(alias=DEVICE_COOKIE, max_length=2048)] = None,
) -> TokenPair:
    """OAuth2 password flow: `username` is the email. A successful login also sets the
    `kuda_device` cookie: a device that presents it has its own failed-login allowance, so
    a stranger's wrong passwords cannot lock it out (docs/api.md)."""
    login = await auth.login(username, password, device)
    response.set_cookie(
        DEVICE_COOKIE,
        login.device_token,
        max_age=auth.settings.device_token_ttl_s,
        path=DEVICE_COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return login.tokens


@router.post("/refresh", response_model=TokenPair)
async def refresh(data: RefreshIn, auth: AuthDep, session: SessionDep) -> TokenPair:
    """Rotates the pair: the presented token stops working; presenting it again ends its
    session everywhere (reuse detection)."""
    return await auth.refresh(session, data.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(data: RefreshIn, auth: AuthDep, session: SessionDep) -> Response:
    """Ends the session of this refresh token: its access tokens get 401 and its sockets close
    with 4401 on every instance within 2 seconds."""
    await auth.logout(session, data.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/ws-ticket", response_model=TicketOut)
async def ws_ticket(claims: AccessClaims, auth: AuthDep) -> TicketOut:
    """A single-use ticket for `GET /ws?ticket=...` (browsers cannot set headers)."""
    ticket, ttl = await auth.ws_ticket(claims)
    return TicketOut(ticket=ticket, expires_in=ttl)
