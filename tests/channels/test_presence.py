"""Presence per user across instances (PROTOCOL.md section 6, "Socket additions"), the roster
under it (channels/roster.py, real Redis), and `internal_error` for ops failing server-side."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from channels import Access, ResolvedChannel
from channels.authz import Params
from channels.roster import RedisRoster
from tests import services
from tests.cluster import Cluster
from tests.domain.test_chat import chat, confirmed_ride
from tests.helpers import Account, signup
from tests.live import LiveServer, WsClient, ws_connect


class Room:
    """`room:{id}` with presence; members in memory. `room:9` fails every send server-side."""

    def __init__(self, server: LiveServer) -> None:
        self.members: set[int] = set()
        server.app.state.realtime.registry.register(
            "room:{id}", self.rule, on_send=self.on_send, presence=True
        )

    async def rule(self, user_id: int, params: Params) -> Access:
        if params["id"] not in ("1", "9"):
            return Access.NOT_FOUND
        return Access.ALLOW if user_id in self.members else Access.FORBIDDEN

    async def on_send(
        self, user_id: int, channel: ResolvedChannel, body: str, client_id: str | None
    ) -> dict[str, Any]:
        raise RuntimeError("the database went away")


@pytest.fixture
def room(live: LiveServer) -> Room:
    return Room(live)


async def _presence_events(ws: WsClient, n: int) -> list[tuple[str, int]]:
    out = []
    for _ in range(n):
        frame = await ws.expect("event")
        assert frame["event"].startswith("presence.") and "seq" not in frame, frame
        out.append((frame["event"], frame["data"]["user_id"]))
    return out


async def test_presence_is_per_user_not_per_socket(
    live: LiveServer, room: Room, alice: Account, bob: Account
) -> None:
    room.members |= {alice.id, bob.id}
    async with ws_connect(live.ws_url, alice.access_token) as a:
        await a.expect("welcome")
        assert (await a.request({"op": "subscribe", "channel": "room:1"}))["type"] == "subscribed"
        snapshot = await a.request({"op": "presence", "channel": "room:1", "id": "p1"})
        assert snapshot == {
            "type": "presence",
            "channel": "room:1",
            "users": [alice.id],
            "id": "p1",
        }
        async with (
            ws_connect(live.ws_url, bob.access_token) as b1,
            ws_connect(live.ws_url, bob.access_token) as b2,
        ):
            for ws in (b1, b2):
                await ws.expect("welcome")
                await ws.request({"op": "subscribe", "channel": "room:1"})
            assert await _presence_events(a, 1) == [("presence.joined", bob.id)]
            assert await a.silent(0.3)  # bob's second socket is not a second join
            snapshot = await a.request({"op": "presence", "channel": "room:1"})
            assert snapshot["users"] == sorted([alice.id, bob.id]) and "id" not in snapshot
            await b1.request({"op": "unsubscribe", "channel": "room:1"})
            assert await a.silent(0.3)  # bob is still there on b2
            assert (await a.request({"op": "presence", "channel": "room:1"}))["users"] == sorted(
                [alice.id, bob.id]
            )
        # b2 closed: bob's last subscription is gone.
        assert await _presence_events(a, 1) == [("presence.left", bob.id)]
        assert (await a.request({"op": "presence", "channel": "room:1"}))["users"] == [alice.id]


async def test_a_subscription_is_in_the_roster_by_the_time_it_is_acked(
    live: LiveServer, room: Room, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that moves to another socket drops the old one once the new one is acked: were
    the ack sent before the roster counted the new one, the others would see a leave (and,
    through two instances, possibly the leave after the join)."""
    room.members.add(alice.id)
    roster = live.app.state.realtime.gateway.roster
    counted = roster.joined

    async def slow_joined(channel: str, user_id: int) -> bool:
        await asyncio.sleep(0.3)  # a slow Redis round trip
        joined: bool = await counted(channel, user_id)
        return joined

    monkeypatch.setattr(roster, "joined", slow_joined)
    async with ws_connect(live.ws_url, alice.access_token) as a:
        await a.expect("welcome")
        assert (await a.request({"op": "subscribe", "channel": "room:1"}))["type"] == "subscribed"
        assert await roster.members("room:1") == [alice.id]


async def test_presence_op_errors(
    live: LiveServer, room: Room, alice: Account, bob: Account
) -> None:
    room.members.add(alice.id)
    async with ws_connect(live.ws_url, alice.access_token) as a:
        await a.expect("welcome")
        # A member who has not subscribed may still ask.
        ok = await a.request({"op": "presence", "channel": "room:1", "id": 3})
        assert ok == {"type": "presence", "channel": "room:1", "users": [], "id": 3}
        cases = [
            ({"channel": "room:2"}, "not_found"),
            ({"channel": "nope:1"}, "bad_request"),
            ({"channel": f"user:{alice.id}"}, "bad_request"),  # no presence on user channels
            ({}, "validation_error"),
            ({"channel": 5}, "validation_error"),
        ]
        for fields, code in cases:
            err = await a.request({"op": "presence", "id": "x", **fields})
            assert err["type"] == "error" and err["code"] == code and err["id"] == "x", err
    async with ws_connect(live.ws_url, bob.access_token) as b:
        await b.expect("welcome")
        err = await b.request({"op": "presence", "channel": "room:1"})
        assert err["code"] == "forbidden"


async def test_an_op_failing_on_the_server_gets_internal_error_and_the_socket_stays(
    live: LiveServer, room: Room, alice: Account
) -> None:
    room.members.add(alice.id)
    async with ws_connect(live.ws_url, alice.access_token) as a:
        await a.expect("welcome")
        err = await a.request({"op": "send", "channel": "room:9", "body": "hi", "id": 11})
        assert err["type"] == "error" and err["code"] == "internal_error" and err["id"] == 11
        assert "database" not in err["message"]  # no internals leak
        assert await a.request({"op": "ping", "id": 12}) == {"type": "pong", "id": 12}


async def test_chat_presence_snapshot_lists_members_present(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    channel = chat(ride["id"])
    async with ws_connect(live.ws_url, driver.access_token) as d:
        await d.expect("welcome")
        await d.request({"op": "subscribe", "channel": channel})
        got = await d.request({"op": "presence", "channel": channel, "id": 1})
        assert got == {"type": "presence", "channel": channel, "users": [driver.id], "id": 1}
    async with ws_connect(live.ws_url, (await signup(http)).access_token) as s:
        await s.expect("welcome")
        assert (await s.request({"op": "presence", "channel": channel}))["code"] == "forbidden"


# The roster on Redis ---------------------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    async def __call__(self, channel: str, change: str, user_id: int) -> None:
        self.seen.append((channel, change, user_id))

    async def wait_for(self, item: tuple[str, str, int], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while item not in self.seen:
            assert time.monotonic() < deadline, (item, self.seen)
            await asyncio.sleep(0.05)


async def _roster(redis: Redis, prefix: str, changes: Changes) -> RedisRoster:
    roster = RedisRoster(redis, prefix, heartbeat_s=0.2, ttl_s=1.0)
    await roster.start(changes)
    return roster


async def test_roster_counts_users_and_presence_across_instances(
    redis: Redis, redis_prefix: str
) -> None:
    seen = Changes()
    a, b = await _roster(redis, redis_prefix, seen), await _roster(redis, redis_prefix, seen)
    try:
        assert await a.socket_opened(1) and await b.socket_opened(1) and await b.socket_opened(2)
        assert await a.joined("c", 1) is True  # first anywhere
        assert await b.joined("c", 1) is False  # already present through a
        assert await b.joined("c", 1) is False  # second subscription on b
        assert await b.joined("c", 2) is True
        assert await a.members("c") == [1, 2] == await b.members("c")
        totals = await a.totals()
        assert (totals.sockets, totals.users, totals.instances) == (3, 2, 2)
        assert await a.user_sockets(1) == 2
        # With a limit, the user's sockets on every instance count.
        assert await a.socket_opened(1, limit=2) is False
        assert await a.socket_opened(1, limit=3) is True
        await a.socket_closed(1)
        assert await a.left("c", 1) is False  # still on b
        assert await b.left("c", 1) is False  # b has a second subscription
        assert await b.left("c", 1) is True  # the last one, everywhere
        assert await a.left("c", 1) is False  # not present: nothing to leave
        assert await a.members("c") == [2]
    finally:
        await a.stop()
        await b.stop()
    assert await redis.zcard(redis_prefix + "{roster}:instances") == 0
    assert await redis.hlen(redis_prefix + "{roster}:users") == 0  # stopping removes all
    assert seen.seen == [("c", "left", 2)]  # b's graceful stop reported its last member


async def test_a_dead_instances_users_leave_once_and_a_paused_one_comes_back(
    redis: Redis, redis_prefix: str
) -> None:
    seen = Changes()
    a, b = await _roster(redis, redis_prefix, seen), await _roster(redis, redis_prefix, seen)
    c = await _roster(redis, redis_prefix, seen)
    try:
        await a.socket_opened(7)
        await a.joined("room", 7)
        await b.socket_opened(8)
        await b.joined("room", 8)
        await c.socket_opened(7)  # user 7 also has a socket on c, not in the room
        # "SIGKILL" b: its loop stops, nothing is cleaned up.
        assert b._task is not None
        b._task.cancel()
        await seen.wait_for(("room", "left", 8))
        assert seen.seen.count(("room", "left", 8)) == 1  # one sweeper reported it
        assert await a.members("room") == [7]
        totals = await a.totals()
        assert (totals.sockets, totals.users, totals.instances) == (2, 1, 2)
        # a pauses past its TTL (its loop stops; its deadline passes): it is swept...
        assert a._task is not None
        a._task.cancel()
        await redis.zadd(redis_prefix + "{roster}:instances", {a.instance_id: 0})
        await seen.wait_for(("room", "left", 7))
        assert await c.members("room") == []
        # ...then resumes: it finds itself expired, pushes its state again and 7 is back.
        a._task = asyncio.create_task(a._loop())
        await seen.wait_for(("room", "joined", 7))
        assert await c.members("room") == [7]
        assert (await c.totals()).sockets == 2
    finally:
        await a.stop()
        await c.stop()


# Processes ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigkilled_instances_users_leave_the_chat_within_the_ttl(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    """Driver on A (in the test), passenger on B (`kuda serve`); B is SIGKILLed. Presence
    bound: INSTANCE_TTL_S + INSTANCE_HEARTBEAT_S (here 2 + 0.5 s)."""
    cluster = cluster_factory(services.REDIS_URL)
    fast = {"INSTANCE_TTL_S": "2", "INSTANCE_HEARTBEAT_S": "0.5"}
    a = await cluster.in_process(instance_ttl_s=2, instance_heartbeat_s=0.5)
    b = await cluster.process("b", **fast)
    async with httpx.AsyncClient(base_url=a.http) as http:
        driver, passenger = await signup(http), await signup(http)
        ride = await confirmed_ride(http, driver, passenger)
    channel = chat(ride["id"])
    async with contextlib.AsyncExitStack() as stack:
        d = await stack.enter_async_context(ws_connect(a.ws_url, driver.access_token))
        await d.expect("welcome")
        await d.request({"op": "subscribe", "channel": channel})
        on_b = ws_connect(f"ws://127.0.0.1:{b.port}/ws", passenger.access_token)
        p = await stack.enter_async_context(on_b)
        await p.expect("welcome")
        await p.request({"op": "subscribe", "channel": channel})
        assert await _presence_events(d, 1) == [("presence.joined", passenger.id)]
        snapshot = await d.request({"op": "presence", "channel": channel})
        assert snapshot["users"] == sorted([driver.id, passenger.id])
        b.stop(signal.SIGKILL)
        started = time.monotonic()
        left = await d.expect("event", timeout=20)
        assert left["event"] == "presence.left" and left["data"] == {"user_id": passenger.id}
        print(f"presence.left {time.monotonic() - started:.1f} s after SIGKILL")
        snapshot = await d.request({"op": "presence", "channel": channel})
        assert snapshot["users"] == [driver.id]
        assert await d.silent(1.0)  # left once
