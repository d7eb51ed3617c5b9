"""Ride search: filters, sorts and keyset cursors stable under inserts (PROTOCOL.md section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from models import Ride, User
from server.errors import ValidationFailed
from server.pagination import decode_cursor, encode_cursor
from server.validation import MAX_ID, parse_instant

Sort = Literal["departure_at", "price", "driver_rating"]
KM_PER_DEGREE = 111.045
EARTH_RADIUS_KM = 6371.0
NO_PRICE = 10**9


@dataclass(frozen=True, slots=True)
class Near:
    lat: float
    lng: float
    radius_km: float


@dataclass(frozen=True, slots=True)
class RideQuery:
    origin: str | None = None
    destination: str | None = None
    departure_from: datetime | None = None
    departure_to: datetime | None = None
    min_seats: int | None = None
    max_price: float | None = None
    min_driver_rating: float | None = None
    kind: str | None = None
    status: str = "scheduled"
    sort: Sort = "departure_at"
    limit: int = 20
    cursor: str | None = None
    origin_near: Near | None = None
    destination_near: Near | None = None


def parse_near(value: str | None, radius_km: float, field: str) -> Near | None:
    if value is None:
        return None
    try:
        lat_s, lng_s = value.split(",")
        lat, lng = float(lat_s), float(lng_s)
    except ValueError:
        lat = lng = math.nan
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValidationFailed(
            f"{field} must be 'lat,lng'",
            details=[{"field": f"query.{field}", "message": "lat,lng"}],
        )
    return Near(lat, lng, radius_km)


def _rating() -> ColumnElement[Any]:
    return Ride.driver_rating  # type: ignore[return-value]


def _sort_key(sort: Sort) -> ColumnElement[Any]:
    if sort == "price":
        return func.coalesce(Ride.price, NO_PRICE)
    if sort == "driver_rating":
        return _rating()
    return Ride.departure_at  # type: ignore[return-value]


def _near(lat_col: Any, lng_col: Any, near: Near) -> ColumnElement[bool]:
    """Bounding box (served by the (lat, lng) btree index), then the exact great-circle test."""
    dlat = near.radius_km / KM_PER_DEGREE
    dlng = near.radius_km / (KM_PER_DEGREE * max(math.cos(math.radians(near.lat)), 0.01))
    rlat, rlng = math.radians(near.lat), math.radians(near.lng)
    hav = func.power(func.sin((func.radians(lat_col) - rlat) / 2), 2) + math.cos(rlat) * func.cos(
        func.radians(lat_col)
    ) * func.power(func.sin((func.radians(lng_col) - rlng) / 2), 2)
    return and_(
        lat_col.between(near.lat - dlat, near.lat + dlat),
        lng_col.between(near.lng - dlng, near.lng + dlng),
        2 * EARTH_RADIUS_KM * func.asin(func.sqrt(func.least(hav, 1.0))) <= near.radius_km,
    )


def _filters(q: RideQuery, now: datetime) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [Ride.status == q.status]
    if q.origin:
        conds.append(func.lower(Ride.origin).contains(q.origin.lower(), autoescape=True))
    if q.destination:
        conds.append(func.lower(Ride.destination).contains(q.destination.lower(), autoescape=True))
    departure_from = q.departure_from
    if departure_from is None and q.status == "scheduled":
        departure_from = now
    if departure_from is not None:
        conds.append(Ride.departure_at >= departure_from)
    if q.departure_to is not None:
        conds.append(Ride.departure_at <= q.departure_to)
    if q.min_seats is not None:
        conds.append(Ride.seats_available >= q.min_seats)
    if q.max_price is not None:
        conds.append(Ride.price <= q.max_price)
    if q.min_driver_rating is not None:
        conds.append(_rating() >= q.min_driver_rating)
    if q.kind is not None:
        conds.append(Ride.kind == q.kind)
    if q.origin_near is not None:
        conds.append(_near(Ride.origin_lat, Ride.origin_lng, q.origin_near))
    if q.destination_near is not None:
        conds.append(_near(Ride.destination_lat, Ride.destination_lng, q.destination_near))
    return conds


def _after(q: RideQuery) -> ColumnElement[bool] | None:
    if q.cursor is None:
        return None
    sort, value, last_id = decode_cursor(q.cursor, 3)
    if sort != q.sort or not isinstance(last_id, int):
        raise ValidationFailed(
            "Cursor does not match this sort",
            details=[{"field": "query.cursor", "message": "cursor from another sort"}],
        )
    key = _sort_key(q.sort)
    try:
        if q.sort == "departure_at":
            value = parse_instant(value)
        elif q.sort == "price":
            value = _bounded(Decimal(value))
        else:
            value = _bounded(float(value))
        _bounded(last_id)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ValidationFailed(
            "Invalid cursor", details=[{"field": "query.cursor", "message": "invalid cursor"}]
        ) from exc
    if q.sort == "driver_rating":  # descending rating, then ascending id
        return or_(key < value, and_(key == value, Ride.id > last_id))
    return or_(key > value, and_(key == value, Ride.id > last_id))


def _bounded(value: Any) -> Any:
    """A cursor number PostgreSQL can compare: finite, inside bigint/numeric range."""
    if not math.isfinite(value) or abs(value) > MAX_ID:
        raise ValueError("out of range")
    return value


def build(q: RideQuery, now: datetime) -> Select[tuple[Ride, User, Any]]:
    key = _sort_key(q.sort)
    stmt = (
        select(Ride, User, key.label("sort_key"))
        .join(User, User.id == Ride.driver_id)
        .where(*_filters(q, now))
    )
    after = _after(q)
    if after is not None:
        stmt = stmt.where(after)
    order = key.desc() if q.sort == "driver_rating" else key.asc()
    return stmt.order_by(order, Ride.id.asc()).limit(q.limit + 1)


def _cursor_value(sort: Sort, value: Any) -> Any:
    if sort == "departure_at":
        return value.isoformat()
    if sort == "price":
        return str(value)
    return float(value)


async def search(session: AsyncSession, q: RideQuery) -> tuple[list[tuple[Ride, User]], str | None]:
    rows = (await session.execute(build(q, datetime.now(UTC)))).all()
    page = rows[: q.limit]
    cursor = None
    if len(rows) > q.limit:
        last = page[-1]
        cursor = encode_cursor([q.sort, _cursor_value(q.sort, last.sort_key), last[0].id])
    return [(r[0], r[1]) for r in page], cursor


async def taxi_groups(
    session: AsyncSession, q: RideQuery, limit: int = 10
) -> list[tuple[Ride, User]]:
    """Open taxi_share rides on the same route, departing within 3 hours of the requested
    window (or of now)."""
    if not q.origin and not q.destination:
        return []
    now = datetime.now(UTC)
    start = (q.departure_from or now) - timedelta(hours=3)
    end = (q.departure_to or q.departure_from or now) + timedelta(hours=3)
    conds: list[ColumnElement[bool]] = [
        Ride.kind == "taxi_share",
        Ride.status == "scheduled",
        Ride.seats_available > 0,
        Ride.departure_at.between(max(start, now), end),
    ]
    if q.origin:
        conds.append(func.lower(Ride.origin) == q.origin.lower())
    if q.destination:
        conds.append(func.lower(Ride.destination) == q.destination.lower())
    stmt = (
        select(Ride, User)
        .join(User, User.id == Ride.driver_id)
        .where(*conds)
        .order_by(Ride.departure_at, Ride.id)
        .limit(limit)
    )
    return [(r[0], r[1]) for r in (await session.execute(stmt)).all()]


async def driven_by(
    session: AsyncSession, driver_id: int, status: str | None, cursor: str | None, limit: int
) -> tuple[list[tuple[Ride, User]], str | None]:
    """`GET /users/me/rides`: the driver's rides, soonest departure first (then by id), with a
    keyset cursor on (departure_at, id); served by ix_rides_driver (driver_id, departure_at)."""
    conds: list[ColumnElement[bool]] = [Ride.driver_id == driver_id]
    if status is not None:
        conds.append(Ride.status == status)
    if cursor is not None:
        value, last_id = decode_cursor(cursor, 2)
        try:
            after = parse_instant(value)
            _bounded(last_id)
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(
                "Invalid cursor", details=[{"field": "query.cursor", "message": "invalid cursor"}]
            ) from exc
        if not isinstance(last_id, int) or after.tzinfo is None:
            raise ValidationFailed(
                "Invalid cursor", details=[{"field": "query.cursor", "message": "invalid cursor"}]
            )
        conds.append(
            or_(Ride.departure_at > after, and_(Ride.departure_at == after, Ride.id > last_id))
        )
    stmt = (
        select(Ride, User)
        .join(User, User.id == Ride.driver_id)
        .where(*conds)
        .order_by(Ride.departure_at, Ride.id)
        .limit(limit + 1)
    )
    rows = [(r[0], r[1]) for r in (await session.execute(stmt)).all()]
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1][0]
        next_cursor = encode_cursor([last.departure_at.isoformat(), last.id])
    return page, next_cursor
