"""Auto-completion (PROTOCOL.md section 6) with an injected `now` against the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.jobs.autocomplete import complete_overdue
from tests.helpers import Account
from tests.jobs.conftest import book, publish

AFTER = 21600


def _departure() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)


async def _events(pg: asyncpg.Connection, ride_id: int) -> list[str]:
    rows = await pg.fetch(
        "SELECT event FROM events WHERE channel = $1 ORDER BY seq", f"ride:{ride_id}"
    )
    return [r["event"] for r in rows]


async def test_an_overdue_ride_is_completed_as_by_its_driver_and_reviews_open(
    app: FastAPI,
    client: httpx.AsyncClient,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
    riders: list[Account],
) -> None:
    t = _departure()
    started = await publish(client, driver, t)
    scheduled = await publish(client, driver, t)
    for ride in (started, scheduled):
        await book(client, riders[0], ride["id"])
    r = await client.post(f"/api/v1/rides/{started['id']}/start", headers=driver.headers)
    assert r.status_code == 200, r.text
    cache = app.state.cache

    assert await complete_overdue(maker, cache, t + timedelta(seconds=AFTER - 1), AFTER, 10) == 0
    assert await complete_overdue(maker, cache, t + timedelta(seconds=AFTER), AFTER, 10) == 2
    assert await complete_overdue(maker, cache, t + timedelta(days=1), AFTER, 10) == 0  # once

    for ride, before in ((started, ["ride.started"]), (scheduled, [])):
        got = await client.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)
        assert got.json()["status"] == "completed"
        assert got.json()["version"] == ride["version"] + len(before) + 1
        # one ride.completed; a scheduled ride goes straight there (no invented ride.started)
        assert (await _events(pg, ride["id"]))[-len(before) - 1 :] == [*before, "ride.completed"]
        review = {"target_id": driver.id, "stars": 5}
        r = await client.post(
            f"/api/v1/rides/{ride['id']}/reviews", json=review, headers=riders[0].headers
        )
        assert r.status_code == 201, r.text


async def test_cancelled_and_completed_rides_are_left_alone(
    client: httpx.AsyncClient,
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
) -> None:
    t = _departure()
    cancelled = await publish(client, driver, t)
    await client.post(f"/api/v1/rides/{cancelled['id']}/cancel", headers=driver.headers)
    done = await publish(client, driver, t)
    for action in ("start", "complete"):
        r = await client.post(f"/api/v1/rides/{done['id']}/{action}", headers=driver.headers)
        assert r.status_code == 200, r.text
    later = t + timedelta(days=2)
    assert await complete_overdue(maker, app.state.cache, later, AFTER, 10) == 0
    assert (await _events(pg, cancelled["id"]))[-1] == "ride.cancelled"
    assert (await _events(pg, done["id"])).count("ride.completed") == 1


async def test_concurrent_batches_complete_each_ride_once(
    client: httpx.AsyncClient,
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
) -> None:
    t = _departure()
    rides = [await publish(client, driver, t + timedelta(minutes=i)) for i in range(8)]
    later = t + timedelta(days=1)
    cache = app.state.cache
    done = await asyncio.gather(
        *(complete_overdue(maker, cache, later, AFTER, 2) for _ in range(5))
    )
    while (more := await complete_overdue(maker, cache, later, AFTER, 2)) > 0:
        done.append(more)
    assert sum(done) == 8
    for ride in rides:
        assert (await _events(pg, ride["id"])).count("ride.completed") == 1


async def test_zero_turns_auto_completion_off(
    client: httpx.AsyncClient,
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    driver: Account,
) -> None:
    t = _departure()
    await publish(client, driver, t)
    assert await complete_overdue(maker, app.state.cache, t + timedelta(days=9), 0, 10) == 0
