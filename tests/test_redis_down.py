"""What depends on Redis degrades deliberately when it is down: tickets answer 503 in the
error shape (never 500), rate limits keep counting in-process (never switch off)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import httpx

from tests.channels.test_gateway_auth import _refused
from tests.helpers import assert_error, signup
from tests.live import LiveServer, ws_connect
from tests.redis_server import RedisServer


async def test_tickets_answer_503_while_redis_is_down(
    live_factory: Callable[..., Any], redis_server: RedisServer
) -> None:
    server: LiveServer = await live_factory(redis_url=redis_server.url, redis_socket_timeout_s=1)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
        minted = await http.post("/api/v1/auth/ws-ticket", headers=account.headers)
        assert minted.status_code == 200
        redis_server.kill()
        r = await http.post("/api/v1/auth/ws-ticket", headers=account.headers)
        error = assert_error(r, 503, "unavailable")
        assert "ticket" in error["message"].lower()
        assert int(r.headers["retry-after"]) >= 1
        status, body = await _refused(f"{server.ws_url}?ticket={minted.json()['ticket']}")
        assert status == 503 and body["error"]["code"] == "unavailable"
        # Bearer sockets do not need Redis to authenticate.
        async with ws_connect(server.ws_url, account.access_token) as ws:
            assert (await ws.expect("welcome"))["user_id"] == account.id
        redis_server.start()
        again = await http.post("/api/v1/auth/ws-ticket", headers=account.headers)
        assert again.status_code == 200


async def test_ip_limit_keeps_counting_while_redis_is_down(
    live_factory: Callable[..., Any], redis_server: RedisServer
) -> None:
    server: LiveServer = await live_factory(
        redis_url=redis_server.url, redis_socket_timeout_s=1, auth_requests_per_ip=5
    )
    redis_server.kill()
    async with httpx.AsyncClient(base_url=server.http) as http:
        statuses = []
        for i in range(7):
            form = {"username": f"nobody-{i}@example.com", "password": "wrong-password"}
            statuses.append((await http.post("/api/v1/auth/token", data=form)).status_code)
    assert statuses == [401] * 5 + [429, 429]


async def test_a_stalled_redis_holds_neither_logout_nor_its_effect(
    live_factory: Callable[..., Any], redis_server: RedisServer
) -> None:
    """Redis stopped mid-flight (SIGSTOP: connections open, no answers): logout still answers,
    and the session is ended (the broadcast is bounded; other instances poll PostgreSQL)."""
    server: LiveServer = await live_factory(redis_url=redis_server.url, redis_socket_timeout_s=1)
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        account = await signup(http)
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            r = await http.post(
                "/api/v1/auth/logout", json={"refresh_token": account.refresh_token}
            )
            assert r.status_code == 204
            me = await http.get("/api/v1/users/me", headers=account.headers)
            assert_error(me, 401, "unauthorized")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
