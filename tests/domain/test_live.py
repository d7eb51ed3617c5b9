"""What a client sees live on the ride, user and board channels, and the booking race across
two server processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests import services
from tests.cluster import Cluster
from tests.domain.conftest import book, make_ride
from tests.helpers import signup
from tests.live import LiveServer, ws_connect


async def test_ride_subscriber_sees_booking_seats_and_cancellation(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory()
    async with httpx.AsyncClient(base_url=server.http) as http:
        driver, passenger, watcher = await signup(http), await signup(http), await signup(http)
        ride = await make_ride(http, driver, seats_total=3, instant_booking=True)
        channel = f"ride:{ride['id']}"
        async with (
            ws_connect(server.ws_url, watcher.access_token) as ws,
            ws_connect(server.ws_url, passenger.access_token) as mine,
        ):
            await ws.expect("welcome")
            await mine.expect("welcome")
            assert (await ws.request({"op": "subscribe", "channel": channel}))["seq"] == 0
            await ws.request({"op": "subscribe", "channel": "rides"})
            await mine.request({"op": "subscribe", "channel": f"user:{passenger.id}"})
            booking = (await book(http, passenger, ride["id"], seats=2)).json()
            events = [await ws.expect("event") for _ in range(2)]
            by_channel = {e["channel"]: e for e in events}
            confirmed = by_channel[channel]
            assert confirmed["event"] == "booking.confirmed" and confirmed["seq"] == 1
            assert confirmed["data"] == {
                "booking_id": booking["id"],
                "ride_id": ride["id"],
                "seats": 2,
                "seats_available": 1,
            }
            board = by_channel["rides"]
            assert board["event"] == "ride.updated" and "seq" not in board
            assert board["data"]["seats_available"] == 1
            own = [await mine.expect("event") for _ in range(2)]
            kinds = sorted(e["event"] for e in own)
            assert kinds == ["booking.confirmed", "notification.created"]
            await http.post(f"/api/v1/rides/{ride['id']}/cancel", headers=driver.headers)
            after = [await ws.expect("event") for _ in range(3)]
            seen = [(e["channel"], e["event"], e.get("seq")) for e in after]
            assert (channel, "booking.cancelled", 2) in seen
            assert (channel, "ride.cancelled", 3) in seen
            assert ("rides", "ride.cancelled", None) in seen
            cancelled = next(e for e in after if e["event"] == "ride.cancelled")
            assert (
                cancelled["data"]["status"] == "cancelled" and cancelled["data"]["id"] == ride["id"]
            )


@pytest.mark.slow
async def test_fifty_concurrent_instant_bookings_over_two_processes_never_overbook(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    cluster = cluster_factory(services.REDIS_URL)
    a, b = await cluster.process("a"), await cluster.process("b")
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b,
    ):
        driver = await signup(on_a)
        ride = await make_ride(on_a, driver, seats_total=3, instant_booking=True)
        passengers = await asyncio.gather(*(signup(on_a if i % 2 else on_b) for i in range(50)))
        results = await asyncio.gather(
            *(book(on_a if i % 2 else on_b, p, ride["id"]) for i, p in enumerate(passengers))
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses == [201] * 3 + [409] * 47
        assert all(r.json()["status"] == "confirmed" for r in results if r.status_code == 201)
        assert all(r.json()["error"]["code"] == "conflict" for r in results if r.status_code == 409)
        detail = (await on_b.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)).json()
        assert detail["seats_available"] == 0
        log = await on_a.get(f"/api/v1/channels/ride:{ride['id']}/events", headers=driver.headers)
        items = log.json()["items"]
        assert [e["event"] for e in items] == ["booking.confirmed"] * 3
        assert [e["seq"] for e in items] == [1, 2, 3]
        assert [e["data"]["seats_available"] for e in items] == [2, 1, 0]
