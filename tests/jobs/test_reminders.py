"""`ride.reminder` (PROTOCOL.md section 6) run with an injected `now` against the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.jobs.reminders import send_due
from tests.helpers import Account
from tests.jobs.conftest import book, notes, publish, pushed

LEAD = 3600
T = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)  # the departure


async def test_driver_and_each_confirmed_passenger_are_reminded_once(
    client: httpx.AsyncClient,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
    riders: list[Account],
) -> None:
    ride = await publish(client, driver, T)
    for rider in riders[:2]:
        await book(client, rider, ride["id"])  # instant: confirmed
    pending = await publish(client, driver, T, instant_booking=False)
    await book(client, riders[2], pending["id"])  # pending: no reminder for riders[2]

    assert await send_due(maker, T - timedelta(seconds=LEAD + 1), LEAD, 100) == 0  # too early
    assert await send_due(maker, T - timedelta(minutes=59), LEAD, 100) == 4
    assert await send_due(maker, T - timedelta(minutes=30), LEAD, 100) == 0  # once

    sent = await notes(pg, "ride.reminder")
    expected = {"ride_id": ride["id"], "departure_at": ride["departure_at"],
                "origin": "Innopolis", "destination": "Kazan"}  # fmt: skip
    assert sorted(u for u, d in sent if d == expected) == sorted(
        [driver.id, riders[0].id, riders[1].id]
    )
    assert [u for u, d in sent if d["ride_id"] == pending["id"]] == [driver.id]
    for user in (driver, riders[0], riders[1]):
        assert await pushed(pg, f"user:{user.id}", "ride.reminder") == (2 if user is driver else 1)
    assert await pushed(pg, f"user:{riders[2].id}", "ride.reminder") == 0
    r = await client.get("/api/v1/notifications", headers=riders[0].headers)
    assert [n["kind"] for n in r.json()["items"]].count("ride.reminder") == 1


async def test_never_after_departure_nor_for_a_cancelled_ride(
    client: httpx.AsyncClient,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
    riders: list[Account],
) -> None:
    gone = await publish(client, driver, T)
    await book(client, riders[0], gone["id"])
    cancelled = await publish(client, driver, T)
    await book(client, riders[1], cancelled["id"])
    r = await client.post(f"/api/v1/rides/{cancelled['id']}/cancel", headers=driver.headers)
    assert r.status_code == 200, r.text

    # An instance back from downtime after the departure sends nothing stale.
    assert await send_due(maker, T, LEAD, 100) == 0
    assert await send_due(maker, T + timedelta(hours=1), LEAD, 100) == 0
    assert await send_due(maker, T - timedelta(minutes=10), LEAD, 100) == 2  # `gone` only
    assert {d["ride_id"] for _, d in await notes(pg, "ride.reminder")} == {gone["id"]}


async def test_a_passenger_confirmed_inside_the_lead_time_gets_a_reminder_too(
    client: httpx.AsyncClient,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
    riders: list[Account],
) -> None:
    ride = await publish(client, driver, T, instant_booking=False)
    assert await send_due(maker, T - timedelta(minutes=50), LEAD, 100) == 1  # the driver
    booking = await book(client, riders[0], ride["id"])
    assert await send_due(maker, T - timedelta(minutes=45), LEAD, 100) == 0  # pending
    r = await client.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert r.status_code == 200, r.text
    assert await send_due(maker, T - timedelta(minutes=40), LEAD, 100) == 1
    assert sorted(u for u, _ in await notes(pg, "ride.reminder")) == sorted(
        [driver.id, riders[0].id]
    )


async def test_concurrent_batches_split_the_work_and_send_each_reminder_once(
    client: httpx.AsyncClient,
    maker: async_sessionmaker[AsyncSession],
    pg: asyncpg.Connection,
    driver: Account,
    riders: list[Account],
) -> None:
    rides = [await publish(client, driver, T + timedelta(minutes=i)) for i in range(6)]
    for ride in rides:
        for rider in riders:
            await book(client, rider, ride["id"])
    now = T - timedelta(minutes=30)
    results = await asyncio.gather(*(send_due(maker, now, LEAD, 2) for _ in range(6)))
    while (more := await send_due(maker, now, LEAD, 2)) > 0:
        results.append(more)
    assert sum(results) == 6 * 4
    rows = await pg.fetch(
        "SELECT user_id, data->>'ride_id' AS ride, count(*) AS n FROM notifications "
        "WHERE kind = 'ride.reminder' GROUP BY 1, 2"
    )
    assert len(rows) == 6 * 4 and all(r["n"] == 1 for r in rows)


async def test_lead_zero_turns_reminders_off(
    client: httpx.AsyncClient, maker: async_sessionmaker[AsyncSession], driver: Account
) -> None:
    await publish(client, driver, T)
    assert await send_due(maker, T - timedelta(minutes=1), 0, 100) == 0
