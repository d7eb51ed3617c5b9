"""One lock order for every ride and booking path (docs/decisions.md, "Lock order"): a ride's
cancellation raced against confirmations, rejections and cancellations of its bookings, and
against its passengers booking the same driver's other rides, on two `kuda serve` processes.
Before the fix the ride path locked ride -> bookings and the booking paths booking -> ride, so
the two deadlocked and one side got a 500 (issue 8)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from tests.faults.kuda import departure
from tests.helpers import Account, signup

pytestmark = pytest.mark.slow

ROUNDS = 12
PASSENGERS = 5


async def _ride(http: httpx.AsyncClient, driver: Account) -> int:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_at": departure(),
            "seats_total": 8}  # fmt: skip
    r = await http.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _book(http: httpx.AsyncClient, passenger: Account, ride_id: int) -> int:
    r = await http.post(
        f"/api/v1/rides/{ride_id}/bookings", json={"seats": 1}, headers=passenger.headers
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _round(
    a: httpx.AsyncClient, b: httpx.AsyncClient, driver: Account, riders: list[Account]
) -> list[httpx.Response]:
    ride = await _ride(a, driver)
    other = await _ride(b, driver)  # the same driver's next ride, booked during the race
    bookings = [await _book(a, p, ride) for p in riders]
    for booking in bookings[:3]:  # three confirmed, two pending
        r = await a.post(f"/api/v1/bookings/{booking}/confirm", headers=driver.headers)
        assert r.status_code == 200, r.text
    d, p = driver.headers, [r.headers for r in riders]
    return list(
        await asyncio.gather(
            a.post(f"/api/v1/rides/{ride}/cancel", headers=d),
            b.post(f"/api/v1/bookings/{bookings[0]}/cancel", headers=p[0]),
            a.post(f"/api/v1/bookings/{bookings[1]}/cancel", headers=d),
            b.post(f"/api/v1/bookings/{bookings[3]}/confirm", headers=d),
            a.post(f"/api/v1/bookings/{bookings[4]}/reject", headers=d),
            b.post(f"/api/v1/rides/{other}/bookings", json={"seats": 1}, headers=p[2]),
            a.post(f"/api/v1/rides/{other}/bookings", json={"seats": 1}, headers=p[3]),
        )
    )


async def test_ride_cancel_races_booking_changes_without_errors_or_deadlocks(
    instances: list[httpx.AsyncClient], db_conn: asyncpg.Connection
) -> None:
    a, b = instances
    driver = await signup(a)
    riders = [await signup(a) for _ in range(PASSENGERS)]
    statuses: Counter[int] = Counter()
    for _ in range(ROUNDS):
        for r in await _round(a, b, driver, riders):
            statuses[r.status_code] += 1
            assert r.status_code in (200, 201, 409), (r.request.url, r.status_code, r.text)
    print(f"\nlock order race, {ROUNDS} rounds: {dict(statuses)}")
    await _invariants_hold(db_conn)


async def _invariants_hold(conn: asyncpg.Connection) -> None:
    """Seats match the confirmed bookings; cancelled rides keep no active booking; every
    channel's seqs are 1..head with no gap, and each booking change has its events."""
    rides = await conn.fetch(
        """SELECT r.id, r.status, r.seats_total, r.seats_available,
                  COALESCE(sum(b.seats) FILTER (WHERE b.status = 'confirmed'), 0) AS taken,
                  count(b.id) FILTER (WHERE b.status IN ('pending', 'confirmed')) AS active
           FROM rides r LEFT JOIN bookings b ON b.ride_id = r.id GROUP BY r.id"""
    )
    for ride in rides:
        assert ride["seats_available"] == ride["seats_total"] - ride["taken"], dict(ride)
        if ride["status"] == "cancelled":
            assert ride["active"] == 0, dict(ride)
    gaps = await conn.fetch(
        """SELECT c.channel, c.seq, count(e.id) AS n, max(e.seq) AS top
           FROM channel_seqs c LEFT JOIN events e ON e.channel = c.channel
           GROUP BY c.channel, c.seq HAVING count(e.id) <> c.seq OR max(e.seq) <> c.seq"""
    )
    assert not gaps, [dict(g) for g in gaps]
    await _every_change_has_its_events(conn)


async def _every_change_has_its_events(conn: asyncpg.Connection) -> None:
    bookings = await conn.fetch("SELECT id, ride_id, passenger_id, status FROM bookings")
    events: dict[tuple[str, int], set[str]] = {}
    for row in await conn.fetch("SELECT channel, event, data FROM events"):
        data: dict[str, Any] = _json(row["data"])
        booking_id = data.get("booking_id", data.get("id"))
        if isinstance(booking_id, int) and row["event"].startswith("booking."):
            events.setdefault((row["channel"], booking_id), set()).add(row["event"])
    for booking in bookings:
        on_user = events.get((f"user:{booking['passenger_id']}", booking["id"]), set())
        status = "requested" if booking["status"] == "pending" else booking["status"]
        assert f"booking.{status}" in on_user, (dict(booking), on_user)


def _json(value: Any) -> dict[str, Any]:
    import json

    result: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return result
