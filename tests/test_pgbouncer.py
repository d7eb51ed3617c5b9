"""Kuda through a real PgBouncer in transaction mode (issue 11 item 3), two server connections
shared by every client connection: with `DATABASE_PGBOUNCER=true` every kind of database use
works under concurrency (autocommit reads and logins, write transactions with advisory locks,
`Kuda-Seq` snapshots, socket replay and live events); without it PgBouncer refuses the
connections (asyncpg's startup settings) and the server says it is not ready."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.config import Settings
from tests.domain.conftest import book, make_ride
from tests.helpers import assert_error, signup
from tests.live import LiveServer, ws_connect
from tests.pgbouncer import PgBouncer
from tests.procs import free_port

pytestmark = pytest.mark.slow

SERVER_CONNECTIONS = 2


@pytest.fixture
def bouncer(db: str) -> Iterator[PgBouncer]:
    url = urlsplit(db)
    server = PgBouncer(
        url.hostname or "127.0.0.1",
        url.port or 5432,
        url.path.lstrip("/"),
        listen_port=free_port(21500, 21599),
        pool_size=SERVER_CONNECTIONS,
    ).start()
    yield server
    server.stop()


async def test_everything_works_through_pgbouncer_in_transaction_mode(
    bouncer: PgBouncer, db: str, live_factory: Callable[..., Any]
) -> None:
    live: LiveServer = await live_factory(
        database_url=bouncer.url(), database_pgbouncer=True, db_pool_size=10
    )
    async with httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        driver, rider = await asyncio.gather(signup(http), signup(http))
        async with ws_connect(live.ws_url, driver.access_token) as ws:
            await ws.expect("welcome")
            reply = await ws.request({"op": "subscribe", "channel": f"user:{driver.id}"})
            assert reply["type"] == "subscribed", reply

            rides = await asyncio.gather(*(make_ride(http, driver) for _ in range(8)))
            ids = [ride["id"] for ride in rides]
            h = rider.headers
            answers = await asyncio.gather(
                *(http.get("/api/v1/rides", params={"origin": "Inno"}, headers=h)
                  for _ in range(10)),
                *(http.get(f"/api/v1/rides/{i}", headers=h) for i in ids),
                *(http.get(f"/api/v1/channels/ride:{i}/events", headers=h) for i in ids),
                *(book(http, rider, i) for i in ids),
                http.get(f"/api/v1/users/{driver.id}/reviews", headers=h),
                http.post("/api/v1/auth/token",
                          data={"username": rider.email, "password": "wrong-password"}),
            )  # fmt: skip
            *ok, refused = answers
            assert all(r.status_code in (200, 201) for r in ok), [r.text for r in ok]
            assert_error(refused, 401, "unauthorized")
            assert all("Kuda-Seq" in r.headers for r in ok[10:18])
            found = {item["id"] for item in ok[0].json()["items"]}
            assert set(ids) <= found

            # The driver's socket was sent each booking, its seqs without a gap.
            seqs, booked = [], set()
            while booked != set(ids):
                event = await ws.expect("event", 10)
                seqs.append(event["seq"])
                if event["event"].startswith("booking."):
                    booked.add(event["data"]["ride_id"])
            assert seqs == list(range(1, len(seqs) + 1))

            # A ride channel's socket replay after a change.
            r = await http.patch(f"/api/v1/rides/{ids[0]}", json={"price": 300},
                                 headers=driver.headers)  # fmt: skip
            assert r.status_code == 200, r.text
            subscribe = {"op": "subscribe", "channel": f"ride:{ids[0]}", "since": 0}
            frames = [await ws.request(subscribe)]
            while frames[-1]["type"] != "subscribed":
                frames.append(await ws.recv(10))
            assert frames[-2]["event"] == "ride.updated", frames

    # Every one of those requests shared two server connections.
    conn = await asyncpg.connect(db)
    try:
        servers = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'kuda'"
        )
    finally:
        await conn.close()
    assert servers <= SERVER_CONNECTIONS


async def test_without_the_setting_pgbouncer_refuses_and_readyz_says_so(
    bouncer: PgBouncer, settings_factory: Callable[..., Settings]
) -> None:
    app = create_app(settings_factory(database_url=bouncer.url(), db_connect_timeout_s=2))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://kuda.test") as http:
            r = await http.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["dependencies"]["database"]["status"] == "unavailable"
