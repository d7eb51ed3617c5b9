"""Sessions end on every instance, and login limits hold across instances, with real `kuda
serve` processes on one PostgreSQL and one Redis (and without Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster
from tests.helpers import Account, login, signup
from tests.live import WsClient, ws_connect
from tests.procs import Server
from tests.redis_server import RedisServer
from tests.services import REDIS_URL

pytestmark = pytest.mark.slow

NO_POLL = {"SESSION_SYNC_S": "60", "SESSION_STALE_S": "600"}
"""Instances that poll PostgreSQL only once a minute: an ending that reaches them in seconds
came through the broker."""


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> float:
    """Seconds until `check()` holds (fails after `timeout`)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def close_code(
    ws: WsClient, since: float | None = None, timeout: float = 20.0
) -> tuple[int | None, float]:
    """The server's close code, and the seconds from `since` (monotonic) to the close."""
    started = time.monotonic() if since is None else since
    await asyncio.wait_for(ws.conn.wait_closed(), timeout)
    return ws.conn.close_code, time.monotonic() - started


async def _rest_status(base_url: str, account: Account) -> int:
    async with httpx.AsyncClient(base_url=base_url) as http:
        return (await http.get("/api/v1/users/me", headers=account.headers)).status_code


async def _two_sessions(base_url: str) -> tuple[Account, Account]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        account = await signup(http)
        body = (await login(http, account.email)).json()
    other = Account(account.user, account.email, body["access_token"], body["refresh_token"])
    return account, other


async def test_logout_on_one_instance_closes_sockets_on_the_other_through_the_broker(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    cluster = cluster_factory(REDIS_URL)
    a = await cluster.process("a", **NO_POLL)
    b = await cluster.process("b", **NO_POLL)
    account, other = await _two_sessions(a.base_url)
    async with (
        ws_connect(ws_url(b), account.access_token) as on_b,
        ws_connect(ws_url(a), account.access_token) as on_a,
        ws_connect(ws_url(b), other.access_token) as other_on_b,
    ):
        for ws in (on_b, on_a, other_on_b):
            await ws.expect("welcome")
        async with httpx.AsyncClient(base_url=a.base_url) as http:
            sent = time.monotonic()
            r = await http.post(
                "/api/v1/auth/logout", json={"refresh_token": account.refresh_token}
            )
        assert r.status_code == 204
        code_b, seconds_b = await close_code(on_b, sent)
        code_a, _ = await close_code(on_a)
        assert (code_b, code_a) == (4401, 4401)
        print(f"socket on the other instance closed {seconds_b:.3f} s after the logout")
        assert await _rest_status(b.base_url, account) == 401
        assert await _rest_status(b.base_url, other) == 200
        assert (await other_on_b.request({"op": "ping"}))["type"] == "pong"


async def test_refresh_reuse_closes_the_familys_sockets_everywhere(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    cluster = cluster_factory(REDIS_URL)
    a = await cluster.process("a", **NO_POLL)
    b = await cluster.process("b", **NO_POLL)
    account, _ = await _two_sessions(a.base_url)
    async with httpx.AsyncClient(base_url=a.base_url) as http:
        rotated = await http.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
    fresh = rotated.json()["access_token"]
    async with ws_connect(ws_url(b), fresh) as on_b:
        await on_b.expect("welcome")
        async with httpx.AsyncClient(base_url=a.base_url) as http:
            replay = await http.post(
                "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
            )
        assert replay.status_code == 401
        code, _ = await close_code(on_b)
        assert code == 4401


async def test_sessions_end_everywhere_while_redis_is_down(
    cluster_factory: Callable[[str], Cluster], redis_server: RedisServer
) -> None:
    """Without the broker, every instance learns an ended session from PostgreSQL."""
    cluster = cluster_factory(redis_server.url)
    a = await cluster.process("a", SESSION_SYNC_S="0.5")
    b = await cluster.process("b", SESSION_SYNC_S="0.5")
    account, other = await _two_sessions(a.base_url)
    async with ws_connect(ws_url(b), account.access_token) as on_b:
        await on_b.expect("welcome")
        redis_server.kill()
        async with httpx.AsyncClient(base_url=a.base_url) as http:
            sent = time.monotonic()
            r = await http.post(
                "/api/v1/users/me/password",
                json={"current_password": "correct-horse-42", "new_password": "new-horse-4242"},
                headers=other.headers,
            )
        assert r.status_code == 204
        code, seconds = await close_code(on_b, sent)
        assert code == 4401
        print(f"socket closed {seconds:.3f} s after the password change, Redis down")

        async def refused() -> bool:
            return await _rest_status(b.base_url, account) == 401

        await until(refused)


async def _burst(servers: list[Server], email: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60) as http:
        results = await asyncio.gather(
            *(
                http.post(
                    servers[i % len(servers)].base_url + "/api/v1/auth/token",
                    data={"username": email, "password": f"wrong-{i}"},
                )
                for i in range(n)
            )
        )
    return [r.status_code for r in results]


@pytest.mark.parametrize("redis_down", [False, True], ids=["redis-up", "redis-down"])
async def test_sixty_concurrent_wrong_passwords_over_two_instances_check_at_most_the_limit(
    cluster_factory: Callable[[str], Cluster], redis_server: RedisServer, redis_down: bool
) -> None:
    cluster = cluster_factory(redis_server.url)
    a = await cluster.process("a", LOGIN_FAILURES_PER_EMAIL="10")
    b = await cluster.process("b", LOGIN_FAILURES_PER_EMAIL="10")
    async with httpx.AsyncClient(base_url=a.base_url) as owner:
        account = await signup(owner)  # signing in sets the device cookie
        assert owner.cookies.get("kuda_device")
        if redis_down:
            redis_server.kill()
        statuses = await _burst([a, b], account.email, 60)
        assert statuses.count(401) == 10, statuses  # checked (and wrong)
        assert statuses.count(429) == 50, statuses  # refused before any check
        # A stranger (no device cookie) is locked out for the window, the right password too...
        async with httpx.AsyncClient(base_url=b.base_url) as stranger:
            assert (await login(stranger, account.email)).status_code == 429
        # ...but the owner, on the device they signed in from, is not.
        assert (await login(owner, account.email)).status_code == 200
