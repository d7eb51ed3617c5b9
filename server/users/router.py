from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.deps import CacheDep, CurrentUser, ReadSessionDep, SessionDep, UserId
from server.reviews import service as reviews
from server.reviews.schemas import ReviewPage
from server.reviews.service import review_view
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


@router.get("/{user_id}/reviews", response_model=ReviewPage)
async def user_reviews(
    user_id: PathId,
    _: UserId,
    session: ReadSessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    page = await reviews.for_user(session, user_id, cursor, limit)
    return {"items": [review_view(r) for r in page.items], "next_cursor": page.next_cursor}
