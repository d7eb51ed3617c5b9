"""Alerts across two `kuda serve` processes: the same rides published, edited and given seats
back on both at once still notify each (alert, ride) exactly once, and rides matching the same
owners' alerts, changed at once, never deadlock (their `user:` counters are locked sorted)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from tests.domain.conftest import future
from tests.domain.test_lock_order import _invariants_hold
from tests.helpers import Account, signup

pytestmark = pytest.mark.slow

ROUNDS = 4
OWNERS = 4


async def _ok(response: Any) -> dict[str, Any]:
    r = await response
    assert r.status_code in (200, 201), (r.request.url, r.status_code, r.text)
    body: dict[str, Any] = r.json()
    return body


async def _alerts(http: httpx.AsyncClient, owners: list[Account]) -> dict[int, int]:
    """Two alerts per owner (cheap; cheap with two seats): alert id -> owner id."""
    made: dict[int, int] = {}
    for who in owners:
        for extra in ({}, {"min_seats": 2}):
            body = {"origin": "innopolis", "destination": "KAZAN", "max_price": 300, **extra}
            made[(await _ok(http.post("/api/v1/alerts", json=body, headers=who.headers)))["id"]] = (
                who.id
            )
    return made


def _ride_body(**fields: Any) -> dict[str, Any]:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_at": future(),
            "seats_total": 3, "price": 500, "instant_booking": True}  # fmt: skip
    body.update(fields)
    return body


async def _round(
    a: httpx.AsyncClient, b: httpx.AsyncClient, drivers: list[Account], rider: Account, n: int
) -> tuple[dict[int, int], list[httpx.Response]]:
    """Two rides too dear to match, each with two of its three seats booked; then at once, on
    both instances: each ride repriced twice, its booking cancelled (seats back), and a third
    ride published twice with one Idempotency-Key. Returns ride id -> driver id."""
    rides = [
        await _ok(a.post("/api/v1/rides", json=_ride_body(), headers=d.headers)) for d in drivers
    ]
    bookings = [
        await _ok(
            b.post(f"/api/v1/rides/{r['id']}/bookings", json={"seats": 2}, headers=rider.headers)
        )
        for r in rides
    ]
    publish = {**drivers[0].headers, "Idempotency-Key": f"round-{n}"}
    body = _ride_body(price=250)
    answers = await asyncio.gather(
        *(
            http.patch(f"/api/v1/rides/{r['id']}", json={"price": price}, headers=d.headers)
            for r, d in zip(rides, drivers, strict=True)
            for http, price in ((a, 250), (b, 240))
        ),
        *(
            http.post(f"/api/v1/bookings/{bk['id']}/cancel", headers=rider.headers)
            for http, bk in zip((b, a), bookings, strict=True)
        ),
        a.post("/api/v1/rides", json=body, headers=publish),
        b.post("/api/v1/rides", json=body, headers=publish),
    )
    published = {r.json()["id"] for r in answers[-2:] if r.status_code == 201}
    assert len(published) == 1, [r.text for r in answers[-2:]]
    driven = {r["id"]: d.id for r, d in zip(rides, drivers, strict=True)}
    return {**driven, published.pop(): drivers[0].id}, list(answers)


async def test_each_alert_hears_of_each_ride_once_under_races(
    instances: list[httpx.AsyncClient], db_conn: asyncpg.Connection
) -> None:
    a, b = instances
    owners = [await signup(a) for _ in range(OWNERS)]
    drivers = [await signup(b), await signup(b)]
    rider = await signup(a)
    # The drivers have alerts too: each hears of the other's rides, never of their own.
    alerts = await _alerts(b, owners + drivers)
    statuses: Counter[int] = Counter()
    ride_drivers: dict[int, int] = {}
    for n in range(ROUNDS):
        rides, answers = await _round(a, b, drivers, rider, n)
        ride_drivers.update(rides)
        for r in answers:
            statuses[r.status_code] += 1
            assert r.status_code in (200, 201, 409), (r.request.url, r.status_code, r.text)
    print(f"\nalerts race, {ROUNDS} rounds: {dict(statuses)}")

    expected = {
        (alert_id, ride_id)
        for alert_id, owner in alerts.items()
        for ride_id, driver in ride_drivers.items()
        if owner != driver
    }
    seen: list[tuple[int, int]] = []
    for who in owners + drivers:
        r = await a.get("/api/v1/notifications", params={"limit": 100}, headers=who.headers)
        notes = [n for n in r.json()["items"] if n["kind"] == "ride.matched"]
        for note in notes:
            assert alerts[note["data"]["alert_id"]] == who.id
        seen += [(n["data"]["alert_id"], n["data"]["ride_id"]) for n in notes]
    assert len(seen) == len(set(seen)), Counter(seen).most_common(3)
    assert set(seen) == expected
    await _invariants_hold(db_conn)
