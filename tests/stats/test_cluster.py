"""Statistics across three `kuda serve` processes on one PostgreSQL and one Redis: every
instance's sockets count, and a SIGKILLed instance's sockets leave the figures (roster TTL)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests import services
from tests.cluster import Cluster
from tests.helpers import Account, signup
from tests.live import ws_connect
from tests.procs import Server
from tests.stats.conftest import STATS, make_admin
from tests.stats.test_channel import next_stats, subscribe

FAST = {"INSTANCE_TTL_S": "2", "INSTANCE_HEARTBEAT_S": "0.5"}


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def get_stats(server: Server, admin: Account) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get(STATS, headers=admin.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.slow
async def test_sockets_on_three_instances_count_and_a_killed_ones_leave(
    cluster_factory: Callable[[str], Cluster], db_conn: Any
) -> None:
    cluster = cluster_factory(services.REDIS_URL)
    a, b, c = [await cluster.process(name, **FAST) for name in "abc"]
    async with httpx.AsyncClient(base_url=a.base_url) as http:
        admin = await make_admin(http, db_conn)
        users = [await signup(http) for _ in range(4)]
    # Sockets: 2 on a (one user twice), 3 on b (three users), 1 on c; plus the admin's on a.
    placement = [(a, users[0]), (a, users[0]), (b, users[1]), (b, users[2]), (b, users[3])]
    placement.append((c, users[3]))
    async with contextlib.AsyncExitStack() as stack:
        for server, user in placement:
            ws = await stack.enter_async_context(ws_connect(ws_url(server), user.access_token))
            await ws.expect("welcome")
        dashboard = await stack.enter_async_context(ws_connect(ws_url(a), admin.access_token))
        await subscribe(dashboard)
        first = await next_stats(dashboard)
        expected = {"sockets_open": 7, "users_online": 5, "instances": 3}
        assert {k: first[k] for k in expected} == expected
        for server in (a, b, c):  # every instance answers the same cluster-wide figures
            body = await get_stats(server, admin)
            assert {k: body[k] for k in expected} == expected

        b.stop(signal.SIGKILL)
        started = time.monotonic()
        # users[3] still has a socket on c; users[1] and users[2] were only on b.
        after = {"sockets_open": 4, "users_online": 3, "instances": 2}
        deadline = started + 20  # a bound for correctness (TTL 2 s + heartbeat 0.5 s), not speed
        while True:
            body = await get_stats(a, admin)
            if {k: body[k] for k in after} == after:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.2)
        print(f"sockets of the killed instance gone after {time.monotonic() - started:.1f} s")
        assert {k: (await get_stats(c, admin))[k] for k in after} == after
        # The dashboard on a hears it too.
        while (pushed := await next_stats(dashboard, timeout=10))["sockets_open"] != 4:
            assert time.monotonic() < deadline, pushed
        assert {k: pushed[k] for k in after} == after
