from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response, status

from server.auth.schemas import RefreshIn, RegisterIn, TicketOut, TokenPair
from server.deps import AccessClaims, AuthDep, AuthRateLimit, SessionDep
from server.users.schemas import Me
from server.validation import Text

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[AuthRateLimit])


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=Me)
async def register(data: RegisterIn, auth: AuthDep, session: SessionDep) -> object:
    return await auth.register(session, data)


@router.post("/token", response_model=TokenPair)
async def token(
    username: Annotated[Text, Form(min_length=1, max_length=320)],
    password: Annotated[Text, Form(min_length=1, max_length=128)],
    auth: AuthDep,
    session: SessionDep,
) -> TokenPair:
    """OAuth2 password flow: `username` is the email."""
    return await auth.login(session, username, password)


@router.post("/refresh", response_model=TokenPair)
async def refresh(data: RefreshIn, auth: AuthDep, session: SessionDep) -> TokenPair:
    """Rotates the pair: the presented token stops working; presenting it again revokes
    every token of its login (reuse detection)."""
    return await auth.refresh(session, data.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(data: RefreshIn, auth: AuthDep, session: SessionDep) -> Response:
    await auth.logout(session, data.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/ws-ticket", response_model=TicketOut)
async def ws_ticket(claims: AccessClaims, auth: AuthDep) -> TicketOut:
    """A single-use ticket for `GET /ws?ticket=...` (browsers cannot set headers)."""
    ticket, ttl = await auth.ws_ticket(claims)
    return TicketOut(ticket=ticket, expires_in=ttl)
