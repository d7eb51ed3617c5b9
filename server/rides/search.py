"""Ride search: filters, sorts and keyset cursors stable under inserts (PROTOCOL.md section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Float,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
)
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


Match = Literal["", "like", "any"]
"""How a typed place is searched: not at all, by substring, or among the place names it matched."""


# The statement is built once per shape (which filters are present, the sort, whether there is
# a cursor) with bound parameters, and reused: building a SELECT and its cache key cost about
# as much CPU as decoding the page's rows (docs/decisions.md D38).
@dataclass(frozen=True, slots=True)
class _Shape:
    origin: Match
    destination: Match
    departure_from: bool
    departure_to: bool
    min_seats: bool
    max_price: bool
    min_driver_rating: bool
    kind: bool
    origin_near: bool
    destination_near: bool
    sort: Sort
    after: bool


MAX_PLACES = 100
"""A typed place matching more distinct names than this is common: the rides' own substring
filter serves it as well (walking departures finds matches quickly)."""

_PLACES_SQL = "SELECT {side} AS side, name FROM ride_places WHERE name LIKE :{side_name} ESCAPE '/'"
PLACE_LOOKUPS = {
    (True, False): text(_PLACES_SQL.format(side=1, side_name="origin") + " LIMIT :cap"),
    (False, True): text(_PLACES_SQL.format(side=2, side_name="destination") + " LIMIT :cap"),
    (True, True): text(
        f"({_PLACES_SQL.format(side=1, side_name='origin')} LIMIT :cap) UNION ALL "
        f"({_PLACES_SQL.format(side=2, side_name='destination')} LIMIT :cap)"
    ),
}


async def places(session: AsyncSession, q: RideQuery) -> tuple[list[str] | None, list[str] | None]:
    """The distinct place names (lower-cased) containing the typed origin and destination, in
    one round trip; None for a place not typed or matching more than MAX_PLACES names. An
    empty list: no ride ever went from (to) there (docs/decisions.md D38)."""
    origin, destination = bool(q.origin), bool(q.destination)
    if not (origin or destination):
        return None, None
    values: dict[str, Any] = {"cap": MAX_PLACES + 1}
    if q.origin:
        values["origin"] = like_pattern(q.origin)
    if q.destination:
        values["destination"] = like_pattern(q.destination)
    found: tuple[list[str], list[str]] = ([], [])
    for side, name in (await session.execute(PLACE_LOOKUPS[origin, destination], values)).all():
        found[side - 1].append(name)
    origins, destinations = (names if len(names) <= MAX_PLACES else None for names in found)
    return (origins if origin else None), (destinations if destination else None)


def _p(name: str, type_: Any = None) -> Any:
    return bindparam(name, type_=type_)


def _place(column: Any, name: str, match: Match) -> ColumnElement[bool]:
    if match == "any":
        return func.lower(column) == any_(_p(f"{name}s", ARRAY(String())))
    return func.lower(column).like(_p(name, String()), escape="/")


def like_pattern(typed: str) -> str:
    """`%typed%` for LIKE ... ESCAPE '/', lower-cased (what `contains(autoescape=True)` does)."""
    escaped = typed.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _near(lat_col: Any, lng_col: Any, p: str) -> ColumnElement[bool]:
    """Bounding box (served by the (lat, lng) btree index), then the exact great-circle test."""
    rlat, rlng, cos_rlat = (
        _p(f"{p}_rlat", Float()),
        _p(f"{p}_rlng", Float()),
        _p(f"{p}_cos", Float()),
    )
    dlat = func.sin((func.radians(lat_col) - rlat) / 2)
    dlng = func.sin((func.radians(lng_col) - rlng) / 2)
    hav = func.power(dlat, 2) + cos_rlat * func.cos(func.radians(lat_col)) * func.power(dlng, 2)
    return and_(
        lat_col.between(_p(f"{p}_lat_lo"), _p(f"{p}_lat_hi")),
        lng_col.between(_p(f"{p}_lng_lo"), _p(f"{p}_lng_hi")),
        2 * EARTH_RADIUS_KM * func.asin(func.sqrt(func.least(hav, 1.0))) <= _p(f"{p}_km", Float()),
    )


def _near_values(near: Near, p: str) -> dict[str, float]:
    dlat = near.radius_km / KM_PER_DEGREE
    dlng = near.radius_km / (KM_PER_DEGREE * max(math.cos(math.radians(near.lat)), 0.01))
    rlat = math.radians(near.lat)
    return {
        f"{p}_lat_lo": near.lat - dlat,
        f"{p}_lat_hi": near.lat + dlat,
        f"{p}_lng_lo": near.lng - dlng,
        f"{p}_lng_hi": near.lng + dlng,
        f"{p}_rlat": rlat,
        f"{p}_rlng": math.radians(near.lng),
        f"{p}_cos": math.cos(rlat),
        f"{p}_km": near.radius_km,
    }


@lru_cache(maxsize=512)
def _statement(shape: _Shape) -> Select[tuple[Ride, User, Any]]:
    key = _sort_key(shape.sort)
    conds: list[ColumnElement[bool]] = [Ride.status == _p("status")]
    if shape.origin:
        conds.append(_place(Ride.origin, "origin", shape.origin))
    if shape.destination:
        conds.append(_place(Ride.destination, "destination", shape.destination))
    if shape.departure_from:
        conds.append(Ride.departure_at >= _p("departure_from"))
    if shape.departure_to:
        conds.append(Ride.departure_at <= _p("departure_to"))
    if shape.min_seats:
        conds.append(Ride.seats_available >= _p("min_seats"))
    if shape.max_price:
        conds.append(Ride.price <= _p("max_price"))
    if shape.min_driver_rating:
        conds.append(_rating() >= _p("min_driver_rating"))
    if shape.kind:
        conds.append(Ride.kind == _p("kind"))
    if shape.origin_near:
        conds.append(_near(Ride.origin_lat, Ride.origin_lng, "on"))
    if shape.destination_near:
        conds.append(_near(Ride.destination_lat, Ride.destination_lng, "dn"))
    if shape.after:
        value, last_id = _p("after_value", key.type), _p("after_id", BigInteger())
        if shape.sort == "driver_rating":  # descending rating, then ascending id
            conds.append(or_(key < value, and_(key == value, Ride.id > last_id)))
        else:
            conds.append(or_(key > value, and_(key == value, Ride.id > last_id)))
    order = key.desc() if shape.sort == "driver_rating" else key.asc()
    return (
        select(Ride, User, key.label("sort_key"))
        .join(User, User.id == Ride.driver_id)
        .where(*conds)
        .order_by(order, Ride.id.asc())
        .limit(_p("limit", Integer()))
    )


def _after(q: RideQuery) -> tuple[Any, int] | None:
    if q.cursor is None:
        return None
    sort, value, last_id = decode_cursor(q.cursor, 3)
    if sort != q.sort or not isinstance(last_id, int):
        raise ValidationFailed(
            "Cursor does not match this sort",
            details=[{"field": "query.cursor", "message": "cursor from another sort"}],
        )
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
    return value, last_id


def _bounded(value: Any) -> Any:
    """A cursor number PostgreSQL can compare: finite, inside bigint/numeric range."""
    if not math.isfinite(value) or abs(value) > MAX_ID:
        raise ValueError("out of range")
    return value


def statement(
    q: RideQuery,
    now: datetime,
    origins: list[str] | None = None,
    destinations: list[str] | None = None,
) -> tuple[Select[tuple[Ride, User, Any]], dict[str, Any]]:
    """The search's SELECT (shared by every search of the same shape) and its parameters.
    `origins` / `destinations`: the place names the typed text matched (`places`); without
    them the typed text is searched as a substring of every ride's place."""
    departure_from = q.departure_from
    if departure_from is None and q.status == "scheduled":
        departure_from = now
    after = _after(q)
    values: dict[str, Any] = {"status": q.status, "limit": q.limit + 1}
    origin: Match = ""
    destination: Match = ""
    if q.origin and origins is not None:
        origin, values["origins"] = "any", origins
    elif q.origin:
        origin, values["origin"] = "like", like_pattern(q.origin)
    if q.destination and destinations is not None:
        destination, values["destinations"] = "any", destinations
    elif q.destination:
        destination, values["destination"] = "like", like_pattern(q.destination)
    if departure_from is not None:
        values["departure_from"] = departure_from
    if q.departure_to is not None:
        values["departure_to"] = q.departure_to
    if q.min_seats is not None:
        values["min_seats"] = q.min_seats
    if q.max_price is not None:
        values["max_price"] = q.max_price
    if q.min_driver_rating is not None:
        values["min_driver_rating"] = q.min_driver_rating
    if q.kind is not None:
        values["kind"] = q.kind
    if q.origin_near is not None:
        values.update(_near_values(q.origin_near, "on"))
    if q.destination_near is not None:
        values.update(_near_values(q.destination_near, "dn"))
    if after is not None:
        values["after_value"], values["after_id"] = after
    shape = _Shape(
        origin=origin,
        destination=destination,
        departure_from=departure_from is not None,
        departure_to=q.departure_to is not None,
        min_seats=q.min_seats is not None,
        max_price=q.max_price is not None,
        min_driver_rating=q.min_driver_rating is not None,
        kind=q.kind is not None,
        origin_near=q.origin_near is not None,
        destination_near=q.destination_near is not None,
        sort=q.sort,
        after=after is not None,
    )
    return _statement(shape), values


def build(
    q: RideQuery,
    now: datetime,
    origins: list[str] | None = None,
    destinations: list[str] | None = None,
) -> Select[tuple[Ride, User, Any]]:
    """The search's SELECT with its values bound (EXPLAIN in bench/search.py)."""
    stmt, values = statement(q, now, origins, destinations)
    return stmt.params(values)


def _cursor_value(sort: Sort, value: Any) -> Any:
    if sort == "departure_at":
        return value.isoformat()
    if sort == "price":
        return str(value)
    return float(value)


async def search(session: AsyncSession, q: RideQuery) -> tuple[list[tuple[Ride, User]], str | None]:
    origins, destinations = await places(session, q)
    stmt, values = statement(q, datetime.now(UTC), origins, destinations)  # checks the cursor
    if origins == [] or destinations == []:
        return [], None  # no ride ever went from (to) a place like that
    rows = (await session.execute(stmt, values)).all()
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
