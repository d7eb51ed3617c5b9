"""`kuda seed`: a realistic demo data set for Innopolis and Kazan.

Rides between Innopolis, Kazan (centre), Kazan airport and Kazan railway station over the next
weeks, with drivers, passengers, confirmed bookings (seat counts consistent), a few taxi_share
groups and reviews of past rides. Deterministic for a given `--random-seed`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import Booking, Review, Ride, User
from server.auth.passwords import Passwords

DEMO_PASSWORD = "kuda-demo-password"  # noqa: S105 - documented demo credential
DEMO_DOMAIN = "demo.kuda.example"


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    lat: float
    lng: float


PLACES = (
    Place("Innopolis", 55.7523, 48.7448),
    Place("Kazan", 55.7963, 49.1088),
    Place("Kazan Airport", 55.6062, 49.2787),
    Place("Kazan Railway Station", 55.7877, 49.0996),
)
PRICES = {frozenset({"Innopolis", "Kazan"}): 250, frozenset({"Innopolis", "Kazan Airport"}): 450}
FIRST = ("Aigul", "Timur", "Dina", "Ilya", "Alsu", "Ruslan", "Kamila", "Artem", "Liliya", "Marat")
LAST = ("G.", "K.", "S.", "V.", "N.", "Z.", "F.", "M.")
NOTES = (
    None,
    "Leaving from the university main entrance.",
    "Small luggage only, please.",
    "Can stop at Verkhneuslonsky on the way.",
    "Non-smoking car, music on request.",
)


@dataclass(frozen=True, slots=True)
class SeedResult:
    users: int
    rides: int
    bookings: int
    reviews: int


async def seed(
    sessionmaker: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    *,
    users: int = 40,
    rides: int = 300,
    days: int = 21,
    random_seed: int = 7,
) -> SeedResult:
    rng = random.Random(random_seed)  # noqa: S311 - demo data, not secrets
    async with sessionmaker() as session:
        user_ids = await _users(session, passwords, users, rng)
        drivers = user_ids[: max(2, len(user_ids) // 3)]
        ride_rows = [_ride(rng, drivers, days) for _ in range(rides)]
        plan = _plan_bookings(rng, ride_rows, user_ids)  # settles seats_available first
        ride_ids = await _bulk(session, Ride, ride_rows)
        bookings = [
            {"ride_id": ride_ids[i], "passenger_id": p, "seats": 1, "status": "confirmed"}
            for i, p in plan
        ]
        await _bulk(session, Booking, bookings)
        reviews = _reviews(rng, ride_rows, ride_ids, bookings)
        await _bulk(session, Review, reviews)
        await _ratings(session)
        await session.commit()
        await session.execute(text("ANALYZE"))  # fresh statistics for the planner
        await session.commit()
    return SeedResult(len(user_ids), len(ride_rows), len(bookings), len(reviews))


async def _users(
    session: AsyncSession, passwords: Passwords, n: int, rng: random.Random
) -> list[int]:
    hashed = await passwords.hash(DEMO_PASSWORD)
    start = int(await session.scalar(select(func.count()).select_from(User)) or 0)
    rows = [
        {
            "email": f"user{start + i}@{DEMO_DOMAIN}",
            "password_hash": hashed,
            "display_name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "phone": f"+7917{rng.randrange(10**6, 10**7)}",
            "is_verified": rng.random() < 0.6,
        }
        for i in range(n)
    ]
    return await _bulk(session, User, rows)


def _ride(rng: random.Random, drivers: list[int], days: int) -> dict[str, Any]:
    origin, destination = rng.sample(PLACES, 2)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    departure = now + timedelta(
        hours=rng.randrange(-48, days * 24), minutes=rng.choice((0, 15, 30, 45))
    )
    kind = "taxi_share" if rng.random() < 0.1 else "ride"
    seats = rng.randint(1, 4)
    base = PRICES.get(frozenset({origin.name, destination.name}), 300)
    status = "completed" if departure < now - timedelta(hours=2) else "scheduled"
    return {
        "driver_id": rng.choice(drivers),
        "kind": kind,
        "origin": origin.name,
        "destination": destination.name,
        "origin_lat": origin.lat + rng.uniform(-0.01, 0.01),
        "origin_lng": origin.lng + rng.uniform(-0.01, 0.01),
        "destination_lat": destination.lat,
        "destination_lng": destination.lng,
        "departure_at": departure,
        "seats_total": seats,
        "seats_available": seats,
        "price": None if kind == "taxi_share" else Decimal(base + rng.choice((-50, 0, 0, 50))),
        "notes": rng.choice(NOTES),
        "instant_booking": kind == "taxi_share" or rng.random() < 0.4,
        "status": status,
    }


def _plan_bookings(
    rng: random.Random, rides: list[dict[str, Any]], users: list[int]
) -> list[tuple[int, int]]:
    """(ride index, passenger) pairs, one seat each; decrements the rides' free seats."""
    out = []
    for index, ride in enumerate(rides):
        riders = [u for u in rng.sample(users, min(len(users), 4)) if u != ride["driver_id"]]
        for passenger in riders[: rng.randint(0, ride["seats_total"])]:
            ride["seats_available"] -= 1
            out.append((index, passenger))
    return out


def _reviews(
    rng: random.Random,
    rides: list[dict[str, Any]],
    ride_ids: list[int],
    bookings: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    by_ride = {rid: r for rid, r in zip(ride_ids, rides, strict=True)}
    out = []
    for b in bookings:
        ride = by_ride[b["ride_id"]]
        if ride["status"] == "completed" and rng.random() < 0.7:
            out.append(
                {
                    "ride_id": b["ride_id"],
                    "author_id": b["passenger_id"],
                    "target_id": ride["driver_id"],
                    "stars": rng.choices((3, 4, 5), weights=(1, 3, 6))[0],
                    "comment": rng.choice((None, "Smooth ride", "On time", "Friendly driver")),
                }
            )
    return out


async def _bulk(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert in chunks of 5,000; returns the new ids in order."""
    ids: list[int] = []
    for i in range(0, len(rows), 5000):
        chunk = rows[i : i + 5000]
        if not chunk:
            continue
        result = await session.execute(insert(model).returning(model.id), chunk)
        ids.extend(result.scalars().all())
    return ids


async def _ratings(session: AsyncSession) -> None:
    await session.execute(
        text(
            "UPDATE users u SET rating_sum = s.total, rating_count = s.n FROM "
            "(SELECT target_id, sum(stars) AS total, count(*) AS n FROM reviews "
            "GROUP BY target_id) s WHERE u.id = s.target_id"
        )
    )
    await session.execute(
        text(
            "UPDATE rides r SET driver_rating = u.rating_sum::float / u.rating_count "
            "FROM users u WHERE u.id = r.driver_id AND u.rating_count > 0"
        )
    )
