from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.bookings import service
from server.bookings.schemas import BookingOut, BookingPage
from server.bookings.service import booking_view
from server.deps import CacheDep, CurrentUser, ReadSessionDep, SessionDep, UserId
from server.validation import PathId

router = APIRouter(prefix="/api/v1/bookings", tags=["bookings"])


@router.get("", response_model=BookingPage)
async def my_bookings(
    user_id: UserId,
    session: ReadSessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    page = await service.mine(session, user_id, cursor, limit)
    return {"items": [booking_view(b) for b in page.items], "next_cursor": page.next_cursor}


@router.post("/{booking_id}/confirm", response_model=BookingOut)
async def confirm(
    booking_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.confirm(session, cache, user, booking_id)


@router.post("/{booking_id}/reject", response_model=BookingOut)
async def reject(booking_id: PathId, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return await service.reject(session, user, booking_id)


@router.post("/{booking_id}/cancel", response_model=BookingOut)
async def cancel(
    booking_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.cancel(session, cache, user, booking_id)
