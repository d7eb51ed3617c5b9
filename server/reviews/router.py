"""Reviews: written on a completed ride (`/api/v1/rides/{id}/reviews`), read per user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from server import idempotency
from server.deps import (
    CacheDep,
    CurrentUser,
    IdempotencyKey,
    SessionDep,
    UserId,
    creating,
)
from server.replica import ReadsDep
from server.reviews import service
from server.reviews.schemas import ReviewIn, ReviewOut, ReviewPage
from server.reviews.service import review_view
from server.validation import PathId

router = APIRouter(prefix="/api/v1", tags=["reviews"])


@creating(router, "/rides/{ride_id}/reviews", ReviewOut)
async def review(
    ride_id: PathId,
    data: ReviewIn,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    cache: CacheDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    return await idempotency.create(
        session,
        user.id,
        key,
        request,
        data,
        lambda: service.create(session, cache, user, ride_id, data),
    )


@router.get("/users/{user_id}/reviews", response_model=ReviewPage)
async def user_reviews(
    user_id: PathId,
    _: UserId,
    reads: ReadsDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Served by the read replica when there is one (a review may show a moment late)."""
    page = await reads.run(lambda session: service.for_user(session, user_id, cursor, limit))
    return {"items": [review_view(r) for r in page.items], "next_cursor": page.next_cursor}
