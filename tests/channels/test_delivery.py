"""Backpressure, revocation, domain hooks (send, typing, presence) and graceful shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from channels import Access, ChannelError, ErrorCode, ResolvedChannel, append, revoke
from channels.authz import Params
from channels.codes import CloseCode
from tests.helpers import Account, signup
from tests.live import LiveServer, ws_connect


async def test_socket_that_stops_reading_is_closed_4429_others_keep_receiving(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(ws_max_buffer_bytes=64 * 1024)
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
    channel = f"user:{account.id}"
    pad = "x" * 2000
    async with (
        ws_connect(server.ws_url, account.access_token, max_queue=1) as slow,
        ws_connect(server.ws_url, account.access_token) as fast,
    ):
        for ws in (slow, fast):
            await ws.expect("welcome")
            await ws.request({"op": "subscribe", "channel": channel})
        total = 3000
        reader = asyncio.create_task(fast.events(total, timeout=30))
        async with server.sessionmaker() as s:
            for i in range(total):
                await append(s, channel, "test.big", {"i": i, "pad": pad})
                if i % 500 == 499:
                    await s.commit()
            await s.commit()
        got = [e["seq"] for e in await reader]
        assert got == list(range(1, total + 1))
        with pytest.raises(ConnectionClosed):
            while True:
                await slow.recv(timeout=10)
        assert slow.conn.close_code == CloseCode.RATE_LIMITED
    assert server.app.state.realtime.metrics.tallies.overflows == 1


class Room:
    """A test channel kind `room:{id}` with membership held in memory."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.members: set[int] = set()
        self.sent: list[tuple[int, str]] = []
        server.app.state.realtime.registry.register(
            "room:{id}", self.rule, on_send=self.on_send, typing=True, presence=True
        )

    async def rule(self, user_id: int, params: Params) -> Access:
        if params["id"] != "1":
            return Access.NOT_FOUND
        return Access.ALLOW if user_id in self.members else Access.FORBIDDEN

    async def on_send(
        self, user_id: int, channel: ResolvedChannel, body: str, client_id: str | None
    ) -> dict[str, Any]:
        if user_id not in self.members:
            raise ChannelError(ErrorCode.FORBIDDEN, "not a member")
        message = {"id": len(self.sent) + 1, "user_id": user_id, "body": body}
        async with self.server.sessionmaker() as s:
            await append(s, channel.name, "message.created", message)
            await s.commit()
        self.sent.append((user_id, body))
        return message

    async def remove(self, user_id: int) -> None:
        async with self.server.sessionmaker() as s:
            await revoke(s, "room:1", user_id)
            self.members.discard(user_id)
            await s.commit()


@pytest.fixture
def room(live: LiveServer) -> Room:
    return Room(live)


async def test_rule_answers_not_found_and_forbidden(
    live: LiveServer, room: Room, alice: Account
) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        await ws.expect("welcome")
        assert (await ws.request({"op": "subscribe", "channel": "room:2"}))["code"] == "not_found"
        assert (await ws.request({"op": "subscribe", "channel": "room:1"}))["code"] == "forbidden"
        sent = await ws.request({"op": "send", "channel": "room:1", "body": "hi", "id": 5})
        assert sent["code"] == "forbidden" and sent["id"] == 5


async def test_send_typing_and_presence(
    live: LiveServer, room: Room, alice: Account, bob: Account
) -> None:
    room.members |= {alice.id, bob.id}
    async with (
        ws_connect(live.ws_url, alice.access_token) as a,
        ws_connect(live.ws_url, bob.access_token) as b,
    ):
        await a.expect("welcome")
        await b.expect("welcome")
        await a.request({"op": "subscribe", "channel": "room:1"})
        await b.request({"op": "subscribe", "channel": "room:1"})
        joined = await a.expect("event")
        assert joined["event"] == "presence.joined" and joined["data"] == {"user_id": bob.id}
        assert "seq" not in joined
        await a.send({"op": "send", "channel": "room:1", "body": "leaving at 8", "id": "m"})
        # The ack and the event may arrive in either order; each exactly once.
        frames = {f["type"]: f for f in [await a.recv(), await a.recv()]}
        ack = frames["ack"]
        assert ack["id"] == "m" and ack["data"]["body"] == "leaving at 8"
        assert frames["event"]["data"] == ack["data"]
        (message,) = await b.events(1)
        assert message["event"] == "message.created" and message["seq"] == 1
        assert message["data"] == ack["data"]
        assert room.sent == [(alice.id, "leaving at 8")]
        await a.send({"op": "typing", "channel": "room:1"})
        typing = await b.expect("event")
        assert typing["event"] == "typing" and typing["data"] == {"user_id": alice.id}
        assert await a.silent()  # the sender does not see its own typing
        await b.request({"op": "unsubscribe", "channel": "room:1"})
        left = await a.expect("event")
        assert left["event"] == "presence.left" and left["data"] == {"user_id": bob.id}


async def test_revocation_stops_delivery_exactly_at_the_revoking_commit(
    live: LiveServer, room: Room, alice: Account, bob: Account
) -> None:
    room.members |= {alice.id, bob.id}
    async with (
        ws_connect(live.ws_url, alice.access_token) as a,
        ws_connect(live.ws_url, bob.access_token) as b,
    ):
        for ws in (a, b):
            await ws.expect("welcome")
            await ws.request({"op": "subscribe", "channel": "room:1"})
        await a.expect("event")  # presence.joined of bob
        async with live.sessionmaker() as s:
            await append(s, "room:1", "message.created", {"n": 1})
            await s.commit()
        await room.remove(bob.id)
        async with live.sessionmaker() as s:
            await append(s, "room:1", "message.created", {"n": 2})
            await s.commit()
        seen = [await a.expect("event") for _ in range(3)]
        assert [e["data"]["n"] for e in seen if e["event"] == "message.created"] == [1, 2]
        left = [e for e in seen if e["event"] == "presence.left"]
        assert [e["data"] for e in left] == [{"user_id": bob.id}]  # others see bob leave
        (before,) = await b.events(1)
        assert before["data"] == {"n": 1}
        gone = await b.expect("unsubscribed")
        assert gone == {"type": "unsubscribed", "channel": "room:1", "reason": "forbidden"}
        assert await b.silent()
        again = await b.request({"op": "subscribe", "channel": "room:1"})
        assert again["code"] == "forbidden"


async def test_graceful_shutdown_closes_sockets_1012(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory()
    async with httpx.AsyncClient(base_url=server.http) as http:
        account = await signup(http)
    async with ws_connect(server.ws_url, account.access_token) as ws:
        await ws.expect("welcome")
        stopping = asyncio.create_task(server.stop())
        with pytest.raises(ConnectionClosed):
            await ws.recv(timeout=10)
        assert ws.conn.close_code == CloseCode.RESTART
        await stopping
