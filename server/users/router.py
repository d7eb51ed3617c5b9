from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from server.deps import (
    AuthDep,
    CacheDep,
    CurrentUser,
    ReadCurrentUser,
    ReadSessionDep,
    SessionDep,
    UserId,
)
from server.users import deletion, service
from server.users.schemas import AccountDeleteIn, Me, MePatch, PasswordChangeIn, PublicUser
from server.validation import PathId

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("/me", response_model=Me)
async def get_me(user: ReadCurrentUser) -> object:
    return user


@router.patch("/me", response_model=Me)
async def patch_me(
    patch: MePatch, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> object:
    return await service.update_me(session, cache, user, patch)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(data: PasswordChangeIn, user_id: UserId, auth: AuthDep) -> Response:
    """Every session of the account ends, this one included: access tokens get 401, refresh
    tokens are revoked, sockets close with 4401 on every instance. Wrong current password:
    403; too many wrong ones: 429."""
    await auth.change_password(user_id, data.current_password, data.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT)
async def delete_me(
    data: AccountDeleteIn, request: Request, user_id: UserId, auth: AuthDep, cache: CacheDep
) -> Response:
    """The account is anonymised (no email, phone or name left), its sessions and sockets
    end, its scheduled rides and active bookings are cancelled with the usual events."""
    await deletion.delete_account(
        auth, request.app.state.sessionmaker, cache, user_id, data.password
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{user_id}", response_model=PublicUser)
async def get_user(
    user_id: PathId, _: UserId, session: ReadSessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.public_profile(session, cache, user_id)
