"""PROTOCOL.md section 6, "Live statistics", on two instances: REST and the `stats` channel."""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Deployment
from tests.domain.conftest import book, make_ride
from tests.faults.kuda import wait_until
from tests.helpers import Account, assert_error, signup
from tests.live import WsClient

pytestmark = pytest.mark.slow

STATS = "/api/v1/admin/stats"
KEYS = {"sockets_open", "users_online", "rides_published_today", "seats_booked_today",
        "messages_today", "busiest_routes", "instances"}  # fmt: skip


@pytest.fixture(scope="module")
async def admin(kuda: Deployment) -> Account:
    return await kuda.admin()


async def stats(http: httpx.AsyncClient, admin: Account) -> dict[str, Any]:
    r = await http.get(STATS, headers=admin.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == KEYS, body
    return body


async def reaches(http: httpx.AsyncClient, admin: Account, **expected: int) -> None:
    """Wait until the stats read through `http` show `expected` (live counts settle)."""

    async def shown() -> bool:
        body = await stats(http, admin)
        return all(body[k] == v for k, v in expected.items())

    await wait_until(shown, timeout=15, what=f"stats {expected}")


async def test_stats_have_exactly_the_contracts_keys_and_shapes(
    a: httpx.AsyncClient, admin: Account
) -> None:
    body = await stats(a, admin)
    for key in KEYS - {"busiest_routes"}:
        assert isinstance(body[key], int) and not isinstance(body[key], bool), (key, body)
        assert body[key] >= 0
    routes = body["busiest_routes"]
    assert isinstance(routes, list) and len(routes) <= 10
    assert all(set(r) == {"origin", "destination", "rides"} for r in routes), routes
    assert [r["rides"] for r in routes] == sorted((r["rides"] for r in routes), reverse=True)
    assert body["instances"] == 2


async def test_stats_are_403_for_non_admins_and_401_without_a_token(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    user = await signup(a)
    assert_error(await b.get(STATS, headers=user.headers), 403, "forbidden")
    assert_error(await a.get(STATS), 401, "unauthorized")


async def test_socket_counts_cover_every_instance(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, admin: Account
) -> None:
    before = await stats(a, admin)
    user = await signup(b)
    async with (
        kuda.socket(kuda.a, user.access_token),
        kuda.socket(kuda.b, user.access_token),
    ):
        for http in (a, b):
            await reaches(
                http,
                admin,
                sockets_open=before["sockets_open"] + 2,
                users_online=before["users_online"] + 1,
            )
    await reaches(b, admin, sockets_open=before["sockets_open"])


async def test_todays_counts_cover_every_instance(
    a: httpx.AsyncClient, b: httpx.AsyncClient, admin: Account
) -> None:
    driver, passenger = await signup(a), await signup(b)
    before = await stats(a, admin)
    ride = await make_ride(b, driver, seats_total=4)
    assert (await book(a, passenger, ride["id"], seats=2)).status_code == 201
    r = await b.post(
        f"/api/v1/rides/{ride['id']}/messages", json={"body": "hello"}, headers=driver.headers
    )
    assert r.status_code == 201, r.text
    for http in (a, b):
        after = await stats(http, admin)
        assert after["rides_published_today"] == before["rides_published_today"] + 1
        assert after["seats_booked_today"] == before["seats_booked_today"] + 2
        assert after["messages_today"] == before["messages_today"] + 1


async def test_busiest_routes_count_todays_rides_most_first(
    a: httpx.AsyncClient, b: httpx.AsyncClient, admin: Account
) -> None:
    routes = (await stats(a, admin))["busiest_routes"]
    rides = (routes[-1]["rides"] if len(routes) == 10 else 0) + 1
    assert rides <= 50, routes  # the test database holds only this suite's rides
    driver = await signup(a)
    origin, destination = f"From{uuid.uuid4().hex[:6]}", f"To{uuid.uuid4().hex[:6]}"
    for n in range(rides):
        await make_ride(a if n % 2 else b, driver, origin=origin, destination=destination)
    routes = (await stats(b, admin))["busiest_routes"]
    assert {"origin": origin, "destination": destination, "rides": rides} in routes, routes
    assert len(routes) <= 10
    assert [r["rides"] for r in routes] == sorted((r["rides"] for r in routes), reverse=True)


@pytest.fixture
async def stats_socket(kuda: Deployment, admin: Account) -> AsyncIterator[WsClient]:
    async with kuda.socket(kuda.b, admin.access_token) as ws:
        ack = await ws.request({"op": "subscribe", "channel": "stats", "id": 7})
        assert ack["type"] == "subscribed" and ack["channel"] == "stats", ack
        assert ack["id"] == 7 and "seq" not in ack
        yield ws


async def next_stats(ws: WsClient, timeout: float = 5.0) -> dict[str, Any]:
    frame = await ws.expect("event", timeout)
    assert frame["channel"] == "stats" and frame["event"] == "stats", frame
    assert "seq" not in frame
    return frame


async def test_the_stats_channel_is_for_admins_only(kuda: Deployment, a: httpx.AsyncClient) -> None:
    user = await signup(a)
    async with kuda.socket(kuda.a, user.access_token) as ws:
        refused = await ws.request({"op": "subscribe", "channel": "stats", "id": "s"})
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        assert refused["id"] == "s"
        assert (await ws.request({"op": "ping"}))["type"] == "pong"


async def test_the_stats_channel_carries_the_same_object_live(
    kuda: Deployment, a: httpx.AsyncClient, admin: Account, stats_socket: WsClient
) -> None:
    first = (await next_stats(stats_socket))["data"]
    assert set(first) == KEYS
    user = await signup(a)
    async with kuda.socket(kuda.a, user.access_token):
        while True:  # the new socket on the other instance shows up in a later event
            data = (await next_stats(stats_socket))["data"]
            assert set(data) == KEYS
            if data["sockets_open"] == first["sockets_open"] + 1:
                break
        assert data == await stats(a, admin)


async def test_the_stats_channel_pushes_at_most_once_a_second_while_it_changes(
    a: httpx.AsyncClient, stats_socket: WsClient
) -> None:
    frames = [await next_stats(stats_socket)]
    driver = await signup(a)
    started = time.monotonic()
    while time.monotonic() - started < 3.5:  # a change every ~0.1 s
        await make_ride(a, driver)
        with contextlib.suppress(TimeoutError):
            frames.append(await next_stats(stats_socket, timeout=0.05))
    instants = [datetime.fromisoformat(f["at"]) for f in frames]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(instants)]
    print("seconds between stats events:", [round(g, 3) for g in gaps])
    assert len(gaps) >= 2 and min(gaps) >= 1.0, gaps
