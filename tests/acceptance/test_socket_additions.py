"""PROTOCOL.md section 6, "Socket additions": the `presence` op and `presence.joined`/`left` per
user across instances (also when an instance is SIGKILLed), and error frames."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Deployment, events_until
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, signup
from tests.live import WsClient

pytestmark = pytest.mark.slow


@dataclass
class Chat:
    driver: Account
    passenger: Account
    ride: dict[str, Any]

    @property
    def channel(self) -> str:
        return f"ride:{self.ride['id']}:chat"


@pytest.fixture
async def chat(a: httpx.AsyncClient, b: httpx.AsyncClient) -> Chat:
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    booking = (await book(b, passenger, ride["id"])).json()
    r = await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert r.status_code == 200, r.text
    return Chat(driver, passenger, ride)


async def subscribe(ws: WsClient, channel: str) -> None:
    ack = await ws.request({"op": "subscribe", "channel": channel})
    assert ack["type"] == "subscribed", ack


@pytest.fixture
async def watcher(kuda: Deployment, chat: Chat) -> AsyncIterator[WsClient]:
    """The driver, subscribed to the chat on instance a."""
    async with kuda.socket(kuda.a, chat.driver.access_token) as ws:
        await subscribe(ws, chat.channel)
        yield ws


def presence_of(name: str, user_id: int) -> Any:
    return lambda f: f["event"] == name and f["data"].get("user_id") == user_id


async def test_the_presence_op_lists_the_distinct_users_subscribed_on_any_instance(
    kuda: Deployment, chat: Chat, watcher: WsClient
) -> None:
    async with (
        kuda.socket(kuda.b, chat.passenger.access_token) as on_b,
        kuda.socket(kuda.a, chat.passenger.access_token) as on_a,
    ):
        await subscribe(on_b, chat.channel)
        await subscribe(on_a, chat.channel)
        await events_until(watcher, presence_of("presence.joined", chat.passenger.id))
        reply = await on_b.request({"op": "presence", "channel": chat.channel, "id": "p1"})
        assert reply == {
            "type": "presence",
            "channel": chat.channel,
            "users": sorted([chat.driver.id, chat.passenger.id]),
            "id": "p1",
        }


async def test_the_presence_reply_without_an_id_has_none(
    kuda: Deployment, chat: Chat, watcher: WsClient
) -> None:
    reply = await watcher.request({"op": "presence", "channel": chat.channel})
    assert reply == {"type": "presence", "channel": chat.channel, "users": [chat.driver.id]}


async def test_presence_joined_and_left_fire_per_user_not_per_socket_across_instances(
    kuda: Deployment, chat: Chat, watcher: WsClient
) -> None:
    async with kuda.socket(kuda.b, chat.passenger.access_token) as first:
        await subscribe(first, chat.channel)
        joined = await events_until(watcher, presence_of("presence.joined", chat.passenger.id))
        assert joined[-1]["channel"] == chat.channel and "seq" not in joined[-1]
        async with kuda.socket(kuda.a, chat.passenger.access_token) as second:
            await subscribe(second, chat.channel)
            await first.request({"op": "unsubscribe", "channel": chat.channel})
            assert await watcher.silent(1.0)  # still present through the other instance
        left = await events_until(watcher, presence_of("presence.left", chat.passenger.id))
        assert [f["event"] for f in left] == ["presence.left"]
    assert await watcher.silent(0.5)


async def test_moving_a_subscription_to_another_instance_is_not_a_leave(
    kuda: Deployment, chat: Chat, watcher: WsClient
) -> None:
    """A client that moves (subscribes on a new socket, has the ack, then drops the old one) had a
    live subscription all along: others see no `presence.left`, and a `presence` op anywhere
    lists the user as soon as a subscription is acked."""
    token = chat.passenger.access_token
    async with (
        kuda.socket(kuda.a, token) as on_a,
        kuda.socket(kuda.b, token) as on_b,
        kuda.socket(kuda.a, chat.driver.access_token) as probe_a,
        kuda.socket(kuda.b, chat.driver.access_token) as probe_b,
    ):
        await subscribe(on_b, chat.channel)
        await events_until(watcher, presence_of("presence.joined", chat.passenger.id))
        moves = [(on_a, on_b, probe_b), (on_b, on_a, probe_a)] * 15
        for n, (new, old, probe) in enumerate(moves):
            await subscribe(new, chat.channel)
            seen = await probe.request({"op": "presence", "channel": chat.channel})
            assert chat.passenger.id in seen["users"], (n, seen)
            await old.request({"op": "unsubscribe", "channel": chat.channel})
        await on_a.request({"op": "unsubscribe", "channel": chat.channel})
    left = await events_until(watcher, presence_of("presence.left", chat.passenger.id))
    assert [f["event"] for f in left] == ["presence.left"], left


async def test_a_sigkilled_instances_users_leave(
    kuda: Deployment, chat: Chat, watcher: WsClient, a: httpx.AsyncClient
) -> None:
    doomed = await kuda.cluster.process("doomed", INSTANCE_TTL_S="2", DRAIN_S="0")
    try:
        async with kuda.socket(doomed, chat.passenger.access_token) as ws:
            await subscribe(ws, chat.channel)
            await events_until(watcher, presence_of("presence.joined", chat.passenger.id))
            doomed.stop(signal.SIGKILL)
            left = await events_until(
                watcher, presence_of("presence.left", chat.passenger.id), timeout=20
            )
            assert [f["event"] for f in left] == ["presence.left"]
    finally:
        doomed.stop(signal.SIGKILL)
    reply = await watcher.request({"op": "presence", "channel": chat.channel, "id": 2})
    assert reply["users"] == [chat.driver.id]


async def test_a_refused_op_gets_an_error_frame_and_the_socket_stays_open(
    kuda: Deployment, chat: Chat
) -> None:
    """The error frame's shape (section 3). `internal_error` itself is not provoked here: that
    takes breaking the server (tests/faults/test_postgres.py stops PostgreSQL for it)."""
    stranger = await signup_on(kuda)
    async with kuda.socket(kuda.b, stranger.access_token) as ws:
        refused = await ws.request({"op": "presence", "channel": chat.channel, "id": 3})
        assert set(refused) == {"type", "id", "code", "message"}, refused
        assert (refused["type"], refused["code"], refused["id"]) == ("error", "forbidden", 3)
        assert (await ws.request({"op": "ping"}))["type"] == "pong"


async def signup_on(kuda: Deployment) -> Account:
    async with httpx.AsyncClient(base_url=kuda.b.base_url) as http:
        return await signup(http)
