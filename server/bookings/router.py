"""Bookings: requested on a ride (`/api/v1/rides/{id}/bookings`), acted on by id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from server import idempotency
from server.bookings import service
from server.bookings.schemas import BookingIn, BookingOut, BookingPage
from server.bookings.service import booking_view
from server.deps import (
    CacheDep,
    CurrentUser,
    IdempotencyKey,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    UserId,
    creating,
)
from server.validation import PathId

router = APIRouter(prefix="/api/v1", tags=["bookings"])


@creating(router, "/rides/{ride_id}/bookings", BookingOut)
async def book(
    ride_id: PathId,
    data: BookingIn,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    cache: CacheDep,
    settings: SettingsDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    held = settings.seats_held_per_user
    return await idempotency.create(
        session,
        user.id,
        key,
        request,
        data,
        lambda: service.request(session, cache, user, ride_id, data.seats, max_held=held),
    )


@router.get("/rides/{ride_id}/bookings", response_model=BookingPage)
async def ride_bookings(
    ride_id: PathId,
    user_id: UserId,
    session: ReadSessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    page = await service.for_ride(session, user_id, ride_id, cursor, limit)
    return {"items": [booking_view(b) for b in page.items], "next_cursor": page.next_cursor}


@router.get("/bookings", response_model=BookingPage)
async def my_bookings(
    user_id: UserId,
    session: ReadSessionDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    page = await service.mine(session, user_id, cursor, limit)
    return {"items": [booking_view(b) for b in page.items], "next_cursor": page.next_cursor}


@router.post("/bookings/{booking_id}/confirm", response_model=BookingOut)
async def confirm(
    booking_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.confirm(session, cache, user, booking_id)


@router.post("/bookings/{booking_id}/reject", response_model=BookingOut)
async def reject(booking_id: PathId, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return await service.reject(session, user, booking_id)


@router.post("/bookings/{booking_id}/cancel", response_model=BookingOut)
async def cancel(
    booking_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.cancel(session, cache, user, booking_id)
