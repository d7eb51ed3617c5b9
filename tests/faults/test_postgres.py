"""PostgreSQL stopped, stalled and restarted under a real `kuda serve`: REST answers 503
`unavailable` in the contract's shape within bounded time (never 500, never a hang), a socket's
`subscribe` answers an error and the socket stays usable, `/readyz` says so, and everything
recovers by itself when PostgreSQL is back (issue 8 item 3)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.kuda import client, publish_ride, ready, start_kuda, wait_until
from tests.helpers import Account, assert_error, signup
from tests.live import ws_connect
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.slow


async def _requests(http: httpx.AsyncClient, user: Account, ride_id: int) -> list[httpx.Response]:
    """One of each kind while the database is down: reads, a write, a login."""
    h = user.headers
    return list(
        await asyncio.gather(
            http.get(f"/api/v1/rides/{ride_id}", headers=h),
            http.get("/api/v1/users/me", headers=h),
            http.get("/api/v1/rides", params={"origin": "Inno"}, headers=h),
            http.get("/api/v1/notifications", headers=h),
            http.post(f"/api/v1/rides/{ride_id}/cancel", headers=h),
            http.post("/api/v1/auth/token", data={"username": user.email, "password": "x" * 9}),
        )
    )


def _all_unavailable(responses: list[httpx.Response]) -> None:
    for r in responses:
        assert_error(r, 503, "unavailable")
        assert r.headers["Retry-After"] == "1"


async def _readyz_says_database_unavailable(http: httpx.AsyncClient) -> None:
    r = await http.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["dependencies"]["database"]["status"] == "unavailable"


async def _subscribe_fails_and_socket_survives(ws: Any, user: Account) -> None:
    error = await ws.request({"op": "subscribe", "channel": f"user:{user.id}", "id": 7}, 30)
    assert error == {"type": "error", "id": 7, "code": "internal_error",
                     "message": "The database is unavailable; retry shortly"}  # fmt: skip
    assert (await ws.request({"op": "ping", "id": 8}))["type"] == "pong"


async def _everything_works_again(http: httpx.AsyncClient, user: Account, ws: Any) -> None:
    await wait_until(lambda: ready(http), what="readyz 200")
    ride = await publish_ride(http, user)  # the first requests after recovery succeed
    assert (await http.get(f"/api/v1/rides/{ride['id']}", headers=user.headers)).status_code == 200
    ack = await ws.request({"op": "subscribe", "channel": f"ride:{ride['id']}"}, 30)
    assert ack["type"] == "subscribed", ack
    r = await http.post(f"/api/v1/rides/{ride['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    event = await ws.expect("event", 30)
    assert (event["event"], event["seq"]) == ("ride.cancelled", 1)


async def test_stopped_postgres_is_503_and_everything_recovers(
    pg: PostgresServer, tmp_path: Path
) -> None:
    server = await start_kuda(tmp_path, pg.url("kuda"))
    try:
        async with client(server.base_url) as http:
            user = await signup(http)
            ride = await publish_ride(http, user)
            async with ws_connect(server.base_url.replace("http", "ws") + "/ws",
                                  user.access_token) as ws:  # fmt: skip
                await ws.expect("welcome")
                await asyncio.to_thread(pg.stop)
                started = time.monotonic()
                _all_unavailable(await _requests(http, user, ride["id"]))
                print(f"\nstopped PostgreSQL: 6 requests answered 503 in "
                      f"{time.monotonic() - started:.2f} s")  # fmt: skip
                await _readyz_says_database_unavailable(http)
                await _subscribe_fails_and_socket_survives(ws, user)
                await asyncio.to_thread(pg.start)
                await _everything_works_again(http, user, ws)
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


async def test_stalled_postgres_is_503_within_bounded_time_and_recovers(
    pg: PostgresServer, tmp_path: Path
) -> None:
    server = await start_kuda(tmp_path, pg.url("kuda"))
    try:
        async with client(server.base_url) as http:
            user = await signup(http)
            ride = await publish_ride(http, user)
            async with ws_connect(server.base_url.replace("http", "ws") + "/ws",
                                  user.access_token) as ws:  # fmt: skip
                await ws.expect("welcome")
                await asyncio.to_thread(pg.stall)
                try:
                    started = time.monotonic()
                    _all_unavailable(await _requests(http, user, ride["id"]))
                    print(f"\nstalled PostgreSQL: 6 requests answered 503 in "
                          f"{time.monotonic() - started:.2f} s")  # fmt: skip
                    await _readyz_says_database_unavailable(http)
                    await _subscribe_fails_and_socket_survives(ws, user)
                    assert (await http.get("/healthz")).status_code == 200
                finally:
                    await asyncio.to_thread(pg.resume)
                await _everything_works_again(http, user, ws)
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


async def test_a_restart_under_load_gives_503s_while_down_and_no_500s(
    pg: PostgresServer, tmp_path: Path
) -> None:
    """Pooled connections all die in a restart: none of them may surface as a 500, and once
    PostgreSQL answers again every request succeeds (no burst of errors from dead connections)."""
    server = await start_kuda(tmp_path, pg.url("kuda"))
    statuses: Counter[int] = Counter()
    after_recovery: Counter[int] = Counter()
    recovered = asyncio.Event()
    stop = asyncio.Event()
    try:
        async with client(server.base_url, keepalive=False) as http:
            user = await signup(http)
            ride = await publish_ride(http, user)

            async def load() -> None:
                while not stop.is_set():
                    was_recovered = recovered.is_set()
                    r = await http.get(f"/api/v1/rides/{ride['id']}", headers=user.headers)
                    statuses[r.status_code] += 1
                    if was_recovered:
                        after_recovery[r.status_code] += 1
                    await asyncio.sleep(0.01)

            workers = [asyncio.create_task(load()) for _ in range(6)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(pg.restart)
            await wait_until(lambda: ready(http), what="readyz 200")
            recovered.set()
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        server.stop()
    print(f"\nrestart under load: {dict(statuses)}; after recovery {dict(after_recovery)}")
    assert set(statuses) <= {200, 503}, statuses
    assert set(after_recovery) == {200}, after_recovery
    assert "Traceback" not in server.log(), server.log()
