"""Every bad frame gets the contracted answer and the server stays healthy for everyone else."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from channels.codes import CloseCode
from tests.helpers import Account, signup
from tests.live import LiveServer, ws_connect

BAD_FRAMES: list[tuple[str, str, str]] = [
    ("malformed json", '{"op": "ping"', "bad_request"),
    ("not an object", "[1, 2]", "bad_request"),
    ("a string", '"ping"', "bad_request"),
    ("unknown op", '{"op": "dance"}', "bad_request"),
    ("no op", '{"channel": "user:1"}', "bad_request"),
    ("missing channel", '{"op": "subscribe"}', "validation_error"),
    ("channel wrong type", '{"op": "subscribe", "channel": 7}', "validation_error"),
    ("since negative", '{"op": "subscribe", "channel": "user:1", "since": -1}', "validation_error"),
    ("since string", '{"op": "subscribe", "channel": "user:1", "since": "3"}', "validation_error"),
    ("auth without token", '{"op": "auth"}', "validation_error"),
    ("send without body", '{"op": "send", "channel": "user:1"}', "validation_error"),
    ("unknown channel", '{"op": "subscribe", "channel": "weather:1"}', "bad_request"),
    ("channel id not a number", '{"op": "subscribe", "channel": "user:abc"}', "bad_request"),
    (
        "send to a channel without messages",
        '{"op": "send", "channel": "user:1", "body": "x"}',
        "bad_request",
    ),
]


@pytest.mark.parametrize(("label", "text", "code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frame_gets_error_and_socket_stays_open(
    live: LiveServer, alice: Account, label: str, text: str, code: str
) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        await ws.expect("welcome")
        await ws.send(text)
        error = await ws.expect("error")
        assert error["code"] == code, label
        assert error["message"]
        assert (await ws.request({"op": "ping", "id": "still-here"})) == {
            "type": "pong",
            "id": "still-here",
        }


async def test_error_echoes_the_client_id(live: LiveServer, alice: Account) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        await ws.expect("welcome")
        error = await ws.request({"op": "subscribe", "channel": "nope", "id": 41})
        assert error["id"] == 41
        assert error["code"] == "bad_request"


async def test_other_users_channel_is_forbidden(
    live: LiveServer, alice: Account, bob: Account
) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        await ws.expect("welcome")
        error = await ws.request({"op": "subscribe", "channel": f"user:{bob.id}"})
        assert error["code"] == "forbidden"


async def test_frame_over_64_kib_closes_1009(live: LiveServer, alice: Account) -> None:
    async with ws_connect(live.ws_url, alice.access_token, max_size=None) as ws:
        await ws.expect("welcome")
        await ws.send('{"op": "ping", "pad": "' + "x" * (64 * 1024) + '"}')
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.conn.close_code == CloseCode.TOO_BIG


async def test_frame_just_under_the_limit_is_served(live: LiveServer, alice: Account) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        await ws.expect("welcome")
        pad = "x" * (64 * 1024 - 40)
        assert (await ws.request({"op": "ping", "pad": pad}))["type"] == "pong"


async def test_binary_frame_closes_1003(live: LiveServer, alice: Account) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        await ws.expect("welcome")
        await ws.send(b'{"op": "ping"}')
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.conn.close_code == CloseCode.UNSUPPORTED_DATA


async def test_op_flood_is_rate_limited_then_closed_4429(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(ws_ops_per_s=5, ws_ops_burst=10)
    async with httpx.AsyncClient(base_url=server.http) as http:
        flooder, calm = await signup(http), await signup(http)
    async with (
        ws_connect(server.ws_url, flooder.access_token) as bad,
        ws_connect(server.ws_url, calm.access_token) as good,
    ):
        await bad.expect("welcome")
        await good.expect("welcome")
        for _ in range(60):
            await bad.send({"op": "ping"})
        frames = []
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(await bad.recv())
        assert bad.conn.close_code == CloseCode.RATE_LIMITED
        assert {f["type"] for f in frames} == {"pong", "error"}
        assert sum(f["type"] == "pong" for f in frames) >= 10
        assert all(f["code"] == "rate_limited" for f in frames if f["type"] == "error")
        assert (await good.request({"op": "ping"}))["type"] == "pong"


async def test_silent_client_is_dropped_by_heartbeat(live_factory: Callable[..., Any]) -> None:
    """A peer that never answers WebSocket pings is closed after heartbeat_s (+ timeout)."""
    server: LiveServer = await live_factory(heartbeat_s=1)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {account.access_token}\r\n\r\n"
        ).encode()
    )
    status = await reader.readline()
    assert b"101" in status
    received = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(4096):  # never answers the pings
            received += chunk
    writer.close()
    assert b"\x89" in received  # a ping frame was sent before the server gave up
