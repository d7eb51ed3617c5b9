"""PROTOCOL.md section 6, "Reminders and lifecycle", on two instances that both run the jobs
(`JOBS_INTERVAL_S=0.3`, `RIDE_AUTOCOMPLETE_S=2`, `REMINDER_LEAD_S` at its default 3600)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Deployment, events_until, notification_of
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, signup
from tests.live import WsClient

pytestmark = pytest.mark.slow

LEAD_S = 3600
INTERVAL_S = 0.3
AUTOCOMPLETE_S = 2
REMINDER_KEYS = {"ride_id", "departure_at", "origin", "destination"}


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def reminders(http: httpx.AsyncClient, user: Account, ride_id: int) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/notifications", params={"limit": 100}, headers=user.headers)
    assert r.status_code == 200, r.text
    return [
        n
        for n in r.json()["items"]
        if n["kind"] == "ride.reminder" and n["data"]["ride_id"] == ride_id
    ]


async def confirmed(
    a: httpx.AsyncClient, b: httpx.AsyncClient, driver: Account, ride_id: int
) -> Account:
    passenger = await signup(b)
    booking = (await book(b, passenger, ride_id)).json()
    r = await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert r.status_code == 200, r.text
    return passenger


@pytest.fixture
async def inbox(kuda: Deployment) -> AsyncIterator[Any]:
    """`await inbox(user, server)`: a socket subscribed to `user:{id}` (closed after the test)."""
    stack: list[Any] = []

    async def open_(user: Account, server: Any) -> WsClient:
        cm = kuda.socket(server, user.access_token)
        ws: WsClient = await cm.__aenter__()
        stack.append(cm)
        ack = await ws.request({"op": "subscribe", "channel": f"user:{user.id}"})
        assert ack["type"] == "subscribed", ack
        return ws

    yield open_
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


async def test_a_reminder_reaches_the_driver_and_each_confirmed_passenger_once(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, inbox: Any
) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver, departure_at=in_seconds(LEAD_S + 600))  # not yet due
    passenger = await confirmed(a, b, driver, ride["id"])
    pending = await signup(b)
    assert (await book(b, pending, ride["id"])).status_code == 201
    sockets = [await inbox(driver, kuda.a), await inbox(passenger, kuda.b)]
    r = await a.patch(  # now due: 30 minutes before departure
        f"/api/v1/rides/{ride['id']}",
        json={"departure_at": in_seconds(1800)},
        headers=driver.headers,
    )
    assert r.status_code == 200, r.text
    departure_at = r.json()["departure_at"]
    for ws in sockets:
        frame = (await events_until(ws, notification_of("ride.reminder", ride_id=ride["id"])))[-1]
        data = frame["data"]["data"]
        assert set(data) == REMINDER_KEYS, data
        assert data["ride_id"] == ride["id"]
        assert (data["origin"], data["destination"]) == (ride["origin"], ride["destination"])
        assert datetime.fromisoformat(data["departure_at"]) == datetime.fromisoformat(departure_at)
    await asyncio.sleep(10 * INTERVAL_S)  # many more passes on both instances
    for user, http in ((driver, b), (passenger, a)):
        assert len(await reminders(http, user, ride["id"])) == 1
    assert await reminders(a, pending, ride["id"]) == []


async def test_a_reminder_comes_once_the_ride_is_within_the_lead_time_not_before(
    kuda: Deployment, a: httpx.AsyncClient, inbox: Any
) -> None:
    driver = await signup(a)
    ws = await inbox(driver, kuda.b)
    ride = await make_ride(a, driver, departure_at=in_seconds(LEAD_S + 4))
    due = datetime.fromisoformat(ride["departure_at"]) - timedelta(seconds=LEAD_S)
    frame = (await events_until(ws, notification_of("ride.reminder", ride_id=ride["id"])))[-1]
    sent = datetime.fromisoformat(frame["data"]["created_at"])
    print(f"reminder stored {(sent - due).total_seconds():.3f} s after it became due")
    assert sent >= due
    assert (sent - due).total_seconds() <= 10 * INTERVAL_S + 2  # found within a few passes


async def test_a_cancelled_ride_gets_no_reminder(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, inbox: Any
) -> None:
    driver = await signup(a)
    ws = await inbox(driver, kuda.a)
    cancelled = await make_ride(a, driver, departure_at=in_seconds(LEAD_S + 3))
    r = await b.post(f"/api/v1/rides/{cancelled['id']}/cancel", headers=driver.headers)
    assert r.status_code == 200, r.text
    control = await make_ride(b, driver, departure_at=in_seconds(LEAD_S + 4))
    frames = await events_until(ws, notification_of("ride.reminder", ride_id=control["id"]))
    assert not [f for f in frames if notification_of("ride.reminder")(f)][:-1]
    await asyncio.sleep(10 * INTERVAL_S)
    assert await reminders(b, driver, cancelled["id"]) == []


async def test_no_reminder_is_ever_sent_at_or_after_departure(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    """Rides departing two or three seconds from now: a reminder may beat the departure or not come
    at all, but none is stored at or after it."""
    driver = await signup(a)
    rides = [await make_ride(a, driver, departure_at=in_seconds(s)) for s in (2.0, 2.5, 3.0)]
    await asyncio.sleep(3.5 + 4 * INTERVAL_S)
    for ride in rides:
        departure = datetime.fromisoformat(ride["departure_at"])
        for note in await reminders(b, driver, ride["id"]):
            assert datetime.fromisoformat(note["created_at"]) < departure, (note, ride)


async def test_a_booking_confirmed_inside_the_lead_time_gets_its_reminder(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, inbox: Any
) -> None:
    driver = await signup(a)
    driver_ws = await inbox(driver, kuda.a)
    ride = await make_ride(a, driver, departure_at=in_seconds(1800))
    await events_until(driver_ws, notification_of("ride.reminder", ride_id=ride["id"]))
    passenger = await signup(b)
    passenger_ws = await inbox(passenger, kuda.b)
    booking = (await book(b, passenger, ride["id"])).json()
    r = await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert r.status_code == 200, r.text
    await events_until(passenger_ws, notification_of("ride.reminder", ride_id=ride["id"]))
    await asyncio.sleep(10 * INTERVAL_S)
    assert len(await reminders(b, passenger, ride["id"])) == 1
    assert len(await reminders(a, driver, ride["id"])) == 1


async def test_an_instant_booking_inside_the_lead_time_gets_its_reminder(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, inbox: Any
) -> None:
    organiser = await signup(a)
    organiser_ws = await inbox(organiser, kuda.a)
    taxi = await make_ride(a, organiser, departure_at=in_seconds(1800), kind="taxi_share")
    await events_until(organiser_ws, notification_of("ride.reminder", ride_id=taxi["id"]))
    passenger = await signup(b)
    passenger_ws = await inbox(passenger, kuda.b)
    booking = (await book(b, passenger, taxi["id"])).json()
    assert booking["status"] == "confirmed", booking
    await events_until(passenger_ws, notification_of("ride.reminder", ride_id=taxi["id"]))


async def test_rides_still_scheduled_or_started_after_departure_are_completed(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    """`RIDE_AUTOCOMPLETE_S=2`: `ride.completed` as when the driver completes, and reviews open."""
    driver = await signup(a)
    scheduled = await make_ride(a, driver, departure_at=in_seconds(3))
    started = await make_ride(a, driver, departure_at=in_seconds(3))
    passenger = await confirmed(a, b, driver, scheduled["id"])
    r = await b.post(f"/api/v1/rides/{started['id']}/start", headers=driver.headers)
    assert r.status_code == 200, r.text
    async with (
        kuda.socket(kuda.b, passenger.access_token) as ws,
        kuda.socket(kuda.a, passenger.access_token) as live,
    ):
        for ride in (scheduled, started):
            ack = await ws.request({"op": "subscribe", "channel": f"ride:{ride['id']}"})
            assert ack["type"] == "subscribed", ack
        assert (await live.request({"op": "subscribe", "channel": "rides"}))["type"] == "subscribed"
        began = time.monotonic()
        frames = await events_until(ws, "ride.completed", timeout=20)
        frames += await events_until(ws, "ride.completed", timeout=20)
        print(f"both completed {time.monotonic() - began:.3f} s after subscribing")
        ids = {scheduled["id"], started["id"]}
        while ids:  # a live event on `rides` for each, as when the driver completes
            frame = (await events_until(live, lambda f: f["data"].get("id") in ids))[-1]
            if frame["data"]["status"] == "completed":
                assert frame["event"] == "ride.updated" and "seq" not in frame, frame
                ids.discard(frame["data"]["id"])
    completed = {f["channel"]: f for f in frames if f["event"] == "ride.completed"}
    for ride in (scheduled, started):
        frame = completed[f"ride:{ride['id']}"]
        data = frame["data"]
        assert data["status"] == "completed" and data["id"] == ride["id"]
        due = datetime.fromisoformat(ride["departure_at"]) + timedelta(seconds=AUTOCOMPLETE_S)
        assert datetime.fromisoformat(frame["at"]) >= due  # not before its time
        shown = (await a.get(f"/api/v1/rides/{ride['id']}", headers=passenger.headers)).json()
        assert shown == data
    review = await b.post(
        f"/api/v1/rides/{scheduled['id']}/reviews",
        json={"target_id": driver.id, "stars": 5},
        headers=passenger.headers,
    )
    assert review.status_code == 201, review.text
