from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from server import idempotency, snapshot
from server.config import Settings
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
from server.replica import ReadsDep
from server.rides import search as ride_search
from server.rides import service
from server.rides.schemas import (
    MAX_PRICE,
    MAX_SEARCH_PRICE,
    RideIn,
    RideKind,
    RideOut,
    RidePage,
    RidePatch,
    RideStatus,
)
from server.rides.views import ride_view
from server.snapshot import SnapshotSessionDep
from server.validation import Instant, PathId, Text

router = APIRouter(prefix="/api/v1/rides", tags=["rides"])
mine_router = APIRouter(prefix="/api/v1/users/me", tags=["rides"])


@creating(router, "", RideOut)
async def create_ride(
    data: RideIn,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    return await idempotency.create(
        session,
        user.id,
        key,
        request,
        data,
        lambda: service.create(session, settings, user, data),
        sent_fields_only=True,
    )


@router.get("", response_model=RidePage, response_model_exclude_unset=True)
async def search_rides(
    _: UserId,
    reads: ReadsDep,
    settings: SettingsDep,
    origin: Annotated[Text | None, Query(max_length=200)] = None,
    destination: Annotated[Text | None, Query(max_length=200)] = None,
    departure_from: Instant | None = None,
    departure_to: Instant | None = None,
    min_seats: Annotated[int | None, Query(ge=1, le=8)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=MAX_SEARCH_PRICE)] = None,
    min_driver_rating: Annotated[float | None, Query(ge=0, le=5)] = None,
    kind: RideKind | None = None,
    status: RideStatus = "scheduled",
    sort: ride_search.Sort = "departure_at",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    origin_near: Annotated[str | None, Query(description="lat,lng")] = None,
    origin_radius_km: Annotated[float, Query(gt=0, le=200)] = 5.0,
    destination_near: Annotated[str | None, Query(description="lat,lng")] = None,
    destination_radius_km: Annotated[float, Query(gt=0, le=200)] = 5.0,
) -> Response:
    """Scheduled rides departing in the future by default (the caller's own included). Served
    by the read replica when there is one (DATABASE_READ_URL): it may be a moment behind."""
    q = ride_search.RideQuery(
        origin=origin,
        destination=destination,
        departure_from=departure_from,
        departure_to=departure_to,
        min_seats=min_seats,
        max_price=None if max_price is None else min(max_price, MAX_PRICE),  # fits NUMERIC(10,2)
        min_driver_rating=min_driver_rating,
        kind=kind,
        status=status,
        sort=sort,
        limit=limit,
        cursor=cursor,
        origin_near=ride_search.parse_near(origin_near, origin_radius_km, "origin_near"),
        destination_near=ride_search.parse_near(
            destination_near, destination_radius_km, "destination_near"
        ),
    )
    page = await reads.run(lambda session: _search_page(session, q, settings))
    # The views are built to the documented schema already: skip re-validating them.
    return Response(orjson.dumps(page), media_type="application/json")


async def _search_page(
    session: AsyncSession, q: ride_search.RideQuery, settings: Settings
) -> dict[str, Any]:
    rows, next_cursor = await ride_search.search(session, q)
    page: dict[str, Any] = {"items": [ride_view(r, d) for r, d in rows], "next_cursor": next_cursor}
    if not rows:
        groups = await ride_search.taxi_groups(session, q)
        page["suggestions"] = {
            "taxi_services": [t.model_dump() for t in settings.taxi_services],
            "taxi_groups": [ride_view(r, d) for r, d in groups],
        }
    return page


@router.get("/{ride_id}", response_model=RideOut)
async def get_ride(
    ride_id: PathId,
    response: Response,
    _: UserId,
    session: SnapshotSessionDep,
    cache: CacheDep,
) -> dict[str, Any]:
    """The ride; `Kuda-Seq` is the head seq of `ride:{id}` as of this read (subscribe with
    `since` = it to follow the ride from exactly this state)."""
    view, seq = await service.detail(session, cache, ride_id)
    response.headers["ETag"] = f'"{view["version"]}"'
    snapshot.fence(response, seq)
    return view


@router.patch("/{ride_id}", response_model=RideOut)
async def update_ride(
    ride_id: PathId,
    patch: RidePatch,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    cache: CacheDep,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    view = await service.update(session, cache, user, ride_id, patch, if_match)
    response.headers["ETag"] = f'"{view["version"]}"'
    return view


@router.post("/{ride_id}/cancel", response_model=RideOut)
async def cancel_ride(
    ride_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.transition(session, cache, user, ride_id, "cancel")


@router.post("/{ride_id}/start", response_model=RideOut)
async def start_ride(
    ride_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep, settings: SettingsDep
) -> dict[str, Any]:
    """Only from RIDE_START_EARLY_S before departure to RIDE_START_LATE_S after it (409)."""
    window = service.StartWindow.of(settings)
    return await service.transition(session, cache, user, ride_id, "start", window)


@router.post("/{ride_id}/complete", response_model=RideOut)
async def complete_ride(
    ride_id: PathId, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    return await service.transition(session, cache, user, ride_id, "complete")


@mine_router.get("/rides", response_model=RidePage, response_model_exclude_unset=True)
async def my_rides(
    user_id: UserId,
    session: ReadSessionDep,
    status: RideStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The rides I drive (every status unless `status` is given), soonest departure first."""
    rows, next_cursor = await ride_search.driven_by(session, user_id, status, cursor, limit)
    page = {"items": [ride_view(r, d) for r, d in rows], "next_cursor": next_cursor}
    return Response(orjson.dumps(page), media_type="application/json")
