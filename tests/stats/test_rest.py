"""`GET /api/v1/admin/stats` (PROTOCOL.md section 6, "Live statistics"): who may read it, and
the day's counts after rides, bookings and messages (yesterday's rows do not count)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.domain.conftest import book, make_ride
from tests.domain.test_chat import confirmed_ride, post
from tests.helpers import Account, assert_error, signup
from tests.live import LiveServer, ws_connect
from tests.redis_server import RedisServer
from tests.stats.conftest import STATS, make_admin, stats


async def test_admins_only(client: httpx.AsyncClient, admin: Account) -> None:
    assert_error(await client.get(STATS), 401, "unauthorized")
    bad = {"Authorization": "Bearer not-a-token"}
    assert_error(await client.get(STATS, headers=bad), 401, "unauthorized")
    user = await signup(client)
    assert_error(await client.get(STATS, headers=user.headers), 403, "forbidden")
    assert await stats(client, admin) == {
        "sockets_open": 0,
        "users_online": 0,
        "rides_published_today": 0,
        "seats_booked_today": 0,
        "messages_today": 0,
        "busiest_routes": [],
        "instances": 1,  # no Redis: this instance is the whole cluster
    }


async def test_counts_rides_active_bookings_and_messages_of_the_utc_day(
    client: httpx.AsyncClient, admin: Account, db_conn: Any
) -> None:
    driver, p1, p2, p3 = [await signup(client) for _ in range(4)]
    ride = await confirmed_ride(client, driver, p1)  # 1 seat, requested then confirmed
    instant = await make_ride(client, driver, instant_booking=True, seats_total=4)
    assert (await book(client, p2, instant["id"], seats=3)).json()["status"] == "confirmed"
    pending = await book(client, p3, ride["id"])  # no seat left: 409, not a booking
    assert pending.status_code == 409
    other = await make_ride(client, driver, destination="Moscow", seats_total=2)
    request = await book(client, p3, other["id"], seats=2)  # pending: counts while active
    assert request.json()["status"] == "pending"
    for text in ("hi", "on my way"):
        assert (await post(client, driver, ride["id"], text)).status_code == 201
    assert (await post(client, p1, ride["id"], "ok")).status_code == 201
    body = await stats(client, admin)
    assert body["rides_published_today"] == 3
    assert body["seats_booked_today"] == 1 + 3 + 2
    assert body["messages_today"] == 3

    # A rejected booking stops counting; rows made yesterday (UTC) never count.
    reject = f"/api/v1/bookings/{request.json()['id']}/reject"
    assert (await client.post(reject, headers=driver.headers)).status_code == 200
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = midnight - timedelta(seconds=1)
    await db_conn.execute(
        "UPDATE rides SET created_at = $2 WHERE id = $1", instant["id"], yesterday
    )
    await db_conn.execute(
        "UPDATE bookings SET created_at = $2 WHERE ride_id = $1", instant["id"], yesterday
    )
    await db_conn.execute(
        "UPDATE messages SET created_at = $1 WHERE id = (SELECT min(id) FROM messages)", yesterday
    )
    body = await stats(client, admin)
    assert body["rides_published_today"] == 2
    assert body["seats_booked_today"] == 1
    assert body["messages_today"] == 2


async def test_busiest_routes_most_rides_first_case_insensitive_at_most_ten(
    client: httpx.AsyncClient, admin: Account, db_conn: Any
) -> None:
    driver = await signup(client)

    async def publish(origin: str, destination: str, n: int = 1) -> None:
        for _ in range(n):
            await make_ride(client, driver, origin=origin, destination=destination)

    await publish("Innopolis", "Kazan", 2)
    await publish("INNOPOLIS", "kazan", 2)  # the same route: 4 rides, spelt as the first one
    await publish("Kazan", "Innopolis", 3)
    for i in range(10):  # ten routes with one ride each: ties ordered by origin, destination
        await publish(f"Town {i:02d}", "Kazan")
    await publish("Aa", "Zz", 1)
    routes = (await stats(client, admin))["busiest_routes"]
    assert routes[:2] == [
        {"origin": "Innopolis", "destination": "Kazan", "rides": 4},
        {"origin": "Kazan", "destination": "Innopolis", "rides": 3},
    ]
    assert routes[2:] == [{"origin": "Aa", "destination": "Zz", "rides": 1}] + [
        {"origin": f"Town {i:02d}", "destination": "Kazan", "rides": 1} for i in range(7)
    ]
    assert len(routes) == 10

    # Yesterday's rides are not today's routes.
    await db_conn.execute(
        "UPDATE rides SET created_at = now() - interval '2 days' WHERE lower(origin) = 'innopolis'"
    )
    routes = (await stats(client, admin))["busiest_routes"]
    assert routes[0] == {"origin": "Kazan", "destination": "Innopolis", "rides": 3}
    assert all(r["origin"].lower() != "innopolis" for r in routes)


async def test_sockets_and_users_online_and_503_while_redis_is_down(
    live_factory: Callable[..., Any], redis_server: RedisServer, db_conn: Any
) -> None:
    server: LiveServer = await live_factory(redis_url=redis_server.url, redis_socket_timeout_s=1)
    async with httpx.AsyncClient(base_url=server.http) as http, contextlib.AsyncExitStack() as st:
        admin = await make_admin(http, db_conn)
        alice = await signup(http)
        for token in (alice.access_token, alice.access_token, admin.access_token):
            ws = await st.enter_async_context(ws_connect(server.ws_url, token))
            await ws.expect("welcome")
        body = await stats(http, admin)
        assert (body["sockets_open"], body["users_online"], body["instances"]) == (3, 2, 1)
        redis_server.kill()
        r = await http.get(STATS, headers=admin.headers)
        error = assert_error(r, 503, "unavailable")
        assert int(r.headers["retry-after"]) >= 1 and "retry" in error["message"]
        redis_server.start()
        deadline = time.monotonic() + 20  # the roster pushes this instance's sockets again
        while True:
            r = await http.get(STATS, headers=admin.headers)
            if r.status_code == 200 and r.json()["sockets_open"] == 3:
                break
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.2)
