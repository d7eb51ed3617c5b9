"""Handshake authentication paths and their refusals (PROTOCOL.md section 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels.codes import CloseCode
from tests.helpers import Account, login, signup
from tests.live import LiveServer, ws_connect


async def _refused(url: str, token: str | None = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, token, **kw):
            pass
    response = info.value.response
    return response.status_code, orjson.loads(response.body or b"{}")


async def test_bearer_header_gets_welcome(live: LiveServer, alice: Account) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        welcome = await ws.expect("welcome")
    assert welcome["user_id"] == alice.id
    assert welcome["protocol"] == 1
    assert welcome["heartbeat_s"] == live.settings.heartbeat_s
    assert welcome["expires_at"].endswith("Z")
    assert len(welcome["connection_id"]) >= 16


async def test_subprotocol_bearer_selects_kuda_v1_and_never_echoes_token(
    live: LiveServer, alice: Account
) -> None:
    protocols = ["kuda.v1", f"kuda.bearer.{alice.access_token}"]
    async with ws_connect(live.ws_url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.conn.subprotocol == "kuda.v1"
        assert alice.access_token not in str(ws.conn.response.headers)
        assert (await ws.expect("welcome"))["user_id"] == alice.id


async def test_ticket_is_single_use(
    live: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    r = await http.post("/api/v1/auth/ws-ticket", headers=alice.headers)
    ticket = r.json()["ticket"]
    async with ws_connect(f"{live.ws_url}?ticket={ticket}") as ws:
        welcome = await ws.expect("welcome")
    assert welcome["user_id"] == alice.id
    status, body = await _refused(f"{live.ws_url}?ticket={ticket}")
    assert status == 401
    assert body["error"]["code"] == "unauthorized"


async def test_expired_ticket_is_refused(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(ws_ticket_ttl_s=1)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
        ticket = (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()
    await asyncio.sleep(1.2)
    status, _ = await _refused(f"{server.ws_url}?ticket={ticket['ticket']}")
    assert status == 401


@pytest.mark.parametrize("param", ["token", "access_token"])
async def test_token_in_url_is_refused_even_with_a_valid_header(
    live: LiveServer, alice: Account, param: str
) -> None:
    status, body = await _refused(f"{live.ws_url}?{param}={alice.access_token}", alice.access_token)
    assert status == 401
    assert "URL" in body["error"]["message"]


async def test_bad_credentials_are_refused(
    live: LiveServer, http: httpx.AsyncClient, alice: Account
) -> None:
    refresh = (await login(http, alice.email)).json()["refresh_token"]
    cases: dict[str, dict[str, Any]] = {
        "none": {},
        "garbage": {"token": "not-a-token"},
        "refresh token": {"token": refresh},
        "basic auth": {"additional_headers": {"Authorization": "Basic YTpi"}},
        "bad subprotocol token": {"subprotocols": ["kuda.v1", "kuda.bearer.nope"]},
        "unknown ticket": {"url_suffix": "?ticket=never-issued"},
    }
    for label, kw in cases.items():
        url = live.ws_url + kw.pop("url_suffix", "")
        status, body = await _refused(url, kw.pop("token", None), **kw)
        assert status == 401, label
        assert body["error"]["code"] == "unauthorized", label


async def test_expired_token_is_refused(live_factory: Callable[..., Any]) -> None:
    server: LiveServer = await live_factory(access_token_ttl_s=1)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
    await asyncio.sleep(2.1)  # exp has second resolution and is checked against whole seconds
    status, body = await _refused(server.ws_url, account.access_token)
    assert status == 401
    assert "expired" in body["error"]["message"].lower()


async def test_origin_outside_allowed_origins_is_refused(live_factory: Callable[..., Any]) -> None:
    server: LiveServer = await live_factory(allowed_origins=["https://app.kuda.example"])
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
    status, body = await _refused(
        server.ws_url, account.access_token, origin="https://evil.example"
    )
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    async with ws_connect(
        server.ws_url, account.access_token, origin="https://app.kuda.example"
    ) as ws:
        await ws.expect("welcome")
    async with ws_connect(server.ws_url, account.access_token) as ws:  # native clients: no Origin
        await ws.expect("welcome")


async def test_socket_closes_4401_when_token_expires(live_factory: Callable[..., Any]) -> None:
    server: LiveServer = await live_factory(access_token_ttl_s=2)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
    async with ws_connect(server.ws_url, account.access_token) as ws:
        await ws.expect("welcome")
        with pytest.raises(ConnectionClosed):
            await ws.recv(timeout=6)
        assert ws.conn.close_code == CloseCode.TOKEN_EXPIRED


async def test_auth_op_extends_the_socket_and_bad_token_keeps_old_expiry(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(access_token_ttl_s=4)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
        other = await signup(http)
        async with ws_connect(server.ws_url, account.access_token) as ws:
            first = await ws.expect("welcome")
            bad = await ws.request({"op": "auth", "token": "garbage", "id": "a1"})
            assert bad["type"] == "error" and bad["code"] == "unauthorized" and bad["id"] == "a1"
            foreign = await ws.request({"op": "auth", "token": other.access_token})
            assert foreign["code"] == "unauthorized"
            await asyncio.sleep(1.1)
            fresh = (await login(http, account.email)).json()["access_token"]
            authed = await ws.request({"op": "auth", "token": fresh, "id": 2})
            assert authed["type"] == "authed" and authed["id"] == 2
            assert authed["expires_at"] > first["expires_at"]
            # Past the first token's expiry (exp has whole seconds), inside the fresh one's.
            first_expiry = datetime.fromisoformat(first["expires_at"].replace("Z", "+00:00"))
            await asyncio.sleep((first_expiry - datetime.now(UTC)).total_seconds() + 0.3)
            assert (await ws.request({"op": "ping"}))["type"] == "pong"
            with pytest.raises(ConnectionClosed):
                await ws.recv(timeout=5)
            assert ws.conn.close_code == CloseCode.TOKEN_EXPIRED
