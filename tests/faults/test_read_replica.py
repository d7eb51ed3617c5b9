"""A real streaming replica (`pg_basebackup -R` from a test-owned primary) behind
`DATABASE_READ_URL` (issue 11 item 3): search reads it, REST replay never answers fewer events
than the primary holds (a replica paused with `pg_wal_replay_pause()` is passed over), a replica
that is down sends reads to the primary, and reads fail (503) only when both are down."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.kuda import client, publish_ride, start_kuda, wait_until
from tests.helpers import Account, assert_error, signup
from tests.live import ws_connect
from tests.pg_server import PostgresServer
from tests.procs import Server, free_port

pytestmark = pytest.mark.slow

PORTS = (21500, 21599)  # this suite's own range (TEAM.md)
TOWN = "Replicaville"


@pytest.fixture
def primary(pg_template: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(pg_template, port=free_port(*PORTS)).init().start()
    yield server
    server.destroy()


@pytest.fixture
def replica(primary: PostgresServer) -> Iterator[PostgresServer]:
    standby = primary.replica(port=free_port(*PORTS)).start()
    yield standby
    standby.destroy()


async def _kuda(tmp: Path, primary: PostgresServer, replica: PostgresServer) -> Server:
    return await start_kuda(
        tmp, primary.url("kuda"), DATABASE_READ_URL=replica.url("kuda"), DB_REPLICA_RETRY_S="1"
    )


async def _search(http: httpx.AsyncClient, user: Account) -> httpx.Response:
    return await http.get("/api/v1/rides", params={"origin": TOWN}, headers=user.headers)


async def _price_found(http: httpx.AsyncClient, user: Account, ride_id: int, price: float) -> bool:
    r = await _search(http, user)
    assert r.status_code == 200, r.text
    return any(i["id"] == ride_id and float(i["price"]) == price for i in r.json()["items"])


async def _replay(
    http: httpx.AsyncClient, user: Account, channel: str, since: int, limit: int = 100
) -> httpx.Response:
    params = {"since": since, "limit": limit}
    return await http.get(f"/api/v1/channels/{channel}/events", params=params, headers=user.headers)


async def _replica_reads(http: httpx.AsyncClient) -> dict[str, float]:
    text = (await http.get("/metrics")).text
    found = re.findall(r'^kuda_db_replica_reads_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(n) for outcome, n in found}


async def test_search_reads_the_replica_and_replay_never_falls_behind_the_primary(
    primary: PostgresServer, replica: PostgresServer, tmp_path: Path
) -> None:
    server = await _kuda(tmp_path, primary, replica)
    try:
        async with client(server.base_url) as http:
            driver, rider = await signup(http), await signup(http)
            ride = await publish_ride(http, driver, origin=TOWN, price=200)
            ride_id, channel = ride["id"], f"ride:{ride['id']}"
            await wait_until(lambda: _price_found(http, rider, ride_id, 200), what="replica")

            await asyncio.to_thread(replica.sql, "SELECT pg_wal_replay_pause()")
            for price in (210, 220, 230):
                r = await http.patch(
                    f"/api/v1/rides/{ride_id}", json={"price": price}, headers=driver.headers
                )
                assert r.status_code == 200, r.text
            r = await http.get(f"/api/v1/rides/{ride_id}", headers=rider.headers)
            assert float(r.json()["price"]) == 230  # fenced reads stay on the primary
            head = int(r.headers["Kuda-Seq"])
            assert head >= 3

            # Search is the replica's (paused): it still shows the price before the pause.
            assert await _price_found(http, rider, ride_id, 200)

            # Replay is never behind the primary, whatever the replica has replayed.
            for since in (0, head - 1):
                body = (await _replay(http, rider, channel, since)).json()
                assert [e["seq"] for e in body["items"]] == list(range(since + 1, head + 1))
                assert (body["latest_seq"], body["recovered"], body["next_since"]) == (
                    head, True, None)  # fmt: skip
            page = (await _replay(http, rider, channel, 0, limit=2)).json()
            assert [e["seq"] for e in page["items"]] == [1, 2]
            assert page["next_since"] == 2
            last = page["items"][-1]
            async with ws_connect(server.base_url.replace("http", "ws") + "/ws",
                                  rider.access_token) as ws:  # fmt: skip
                await ws.expect("welcome", 30)
                await ws.send({"op": "subscribe", "channel": channel, "since": 1})
                assert (await ws.expect("event", 30)) == last  # the socket's own copy of seq 2
            assert (await _replica_reads(http))["behind"] >= 3

            await asyncio.to_thread(replica.sql, "SELECT pg_wal_replay_resume()")
            await wait_until(lambda: _price_found(http, rider, ride_id, 230), what="replay")
            served = (await _replica_reads(http))["replica"]
            again = (await _replay(http, rider, channel, 0)).json()
            assert [e["seq"] for e in again["items"]] == list(range(1, head + 1))
            assert again["items"][1] == last
            assert (await _replica_reads(http))["replica"] == served + 1
    finally:
        server.stop()


async def test_a_replica_down_sends_reads_to_the_primary_and_503_needs_both_down(
    primary: PostgresServer, replica: PostgresServer, tmp_path: Path
) -> None:
    server = await _kuda(tmp_path, primary, replica)
    try:
        async with client(server.base_url) as http:
            driver = await signup(http)
            ride = await publish_ride(http, driver, origin=TOWN, price=200)
            ride_id, channel = ride["id"], f"ride:{ride['id']}"
            r = await http.post(f"/api/v1/rides/{ride_id}/cancel", headers=driver.headers)
            assert r.status_code == 200, r.text
            await wait_until(lambda: _replayed(http, driver, channel), what="replica")
            r = await http.get("/readyz")
            assert r.json()["dependencies"]["read_replica"] == {"status": "ok"}, r.text

            await asyncio.to_thread(replica.stop)
            r = await _search(http, driver)
            assert r.status_code == 200, r.text
            replay = await _replay(http, driver, channel, 0)
            assert [e["event"] for e in replay.json()["items"]] == ["ride.cancelled"]
            r = await http.get(f"/api/v1/users/{driver.id}/reviews", headers=driver.headers)
            assert (r.status_code, r.json()["items"]) == (200, [])
            assert (await _replica_reads(http))["down"] >= 3
            r = await http.get("/readyz")  # still ready: the primary answers the reads
            assert (r.status_code, r.json()["status"]) == (200, "degraded"), r.text
            assert r.json()["dependencies"]["read_replica"]["status"] == "degraded"

            await asyncio.to_thread(primary.stop)
            assert_error(await _search(http, driver), 503, "unavailable")

            # The replica alone answers search again (the primary is still down); replay needs
            # the primary's head, so it waits for the primary.
            await asyncio.to_thread(replica.start)
            await wait_until(lambda: _status_is(_search(http, driver), 200), what="replica back")
            assert_error(await _replay(http, driver, channel, 0), 503, "unavailable")
    finally:
        server.stop()


async def _replayed(http: httpx.AsyncClient, user: Account, channel: str) -> bool:
    """The replica has the channel's events (the replay page came from it)."""
    before = (await _replica_reads(http)).get("replica", 0)
    r = await _replay(http, user, channel, 0)
    return r.status_code == 200 and (await _replica_reads(http))["replica"] > before


async def _status_is(request: Any, status: int) -> bool:
    return bool((await request).status_code == status)
