from __future__ import annotations

from fastapi import APIRouter

from server.deps import CurrentUser, SessionDep
from server.users import service
from server.users.schemas import Me, MePatch, PublicUser

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("/me", response_model=Me)
async def get_me(user: CurrentUser) -> object:
    return user


@router.patch("/me", response_model=Me)
async def patch_me(patch: MePatch, user: CurrentUser, session: SessionDep) -> object:
    return await service.update_me(session, user, patch)


@router.get("/{user_id}", response_model=PublicUser)
async def get_user(user_id: int, _: CurrentUser, session: SessionDep) -> object:
    return await service.public_profile(session, user_id)
