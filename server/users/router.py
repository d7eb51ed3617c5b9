from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.deps import CacheDep, CurrentUser, ReadSessionDep, SessionDep, UserId
from server.users import service
from server.users.schemas import Me, MePatch, PublicUser
from server.validation import PathId

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("/me", response_model=Me)
async def get_me(user: CurrentUser) -> object:
    return user


@router.patch("/me", response_model=Me)
async def patch_me(
    patch: MePatch, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> object:
    return await service.update_me(session, cache, user, patch)


@router.get("/{user_id}", response_model=PublicUser)
async def get_user(
    user_id: PathId, _: UserId, session: ReadSessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.public_profile(session, cache, user_id)
