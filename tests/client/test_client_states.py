"""The client's state machine against a scripted server: what each close code and refused
handshake leads to, resubscription with `since`, and per-channel ordering of odd streams."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kuda.client import Backoff, Client, StateChange, Unauthorized
from tests.client.conftest import seqs, take
from tests.client.fake_server import FakeServer, Peer

FAST = {"backoff": Backoff(min_s=0.01, max_s=0.05, restart_s=0.01, slow_down_s=0.01)}


def counter_token() -> tuple[list[str], Callable[[], Awaitable[str]]]:
    issued: list[str] = []

    async def get_token() -> str:
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1]

    return issued, get_token


def event(channel: str, seq: int) -> dict[str, object]:
    return {"type": "event", "channel": channel, "seq": seq, "event": "e", "data": {}, "at": "x"}


async def test_resubscribes_with_the_last_seq_and_delivers_each_seq_once_in_order() -> None:
    """Duplicates are dropped, an early seq is held until the gap closes, and after a 1012 the
    channel is subscribed again with `since` = the last seq delivered."""
    since_on_reconnect: list[object] = []

    async def first(peer: Peer) -> None:
        op = await peer.op("subscribe")
        assert "since" not in op
        await peer.send({"type": "subscribed", "channel": "user:1", "seq": 0, "recovered": True,
                         "id": op["id"]})  # fmt: skip
        for seq in (1, 2, 2, 1, 4, 3, 5):  # duplicates, and 4 before 3
            await peer.send(event("user:1", seq))
        await peer.close(1012, "restart")

    async def second(peer: Peer) -> None:
        op = await peer.op("subscribe")
        since_on_reconnect.append(op.get("since"))
        await peer.send(event("user:1", 6))  # replayed, then the ack
        await peer.send({"type": "subscribed", "channel": "user:1", "seq": 6, "recovered": True,
                         "id": op["id"]})  # fmt: skip
        await peer.send(event("user:1", 7))

    _, get_token = counter_token()
    async with FakeServer([first, second]) as server, Client(server.url, get_token, **FAST) as c:
        sub = c.subscribe("user:1")
        assert seqs(await take(sub, 7)) == [1, 2, 3, 4, 5, 6, 7]
        assert since_on_reconnect == [5]
        with pytest.raises(TimeoutError):
            await take(sub, 1, timeout=0.3)


@pytest.mark.parametrize("code", [1011, 1012, 4403, 4429, 1006])
async def test_reconnects_after_closes_that_allow_it_with_a_fresh_token(code: int) -> None:
    async def close(peer: Peer) -> None:
        if code == 1006:
            peer.ws.transport.abort()  # no close frame at all
        else:
            await peer.close(code)

    changes: list[StateChange] = []
    issued, get_token = counter_token()
    async with FakeServer([close]) as server:
        client = Client(server.url, get_token, **FAST)
        client.on_state(changes.append)
        async with client:
            async with asyncio.timeout(10):
                while client.connections < 2 or client.state != "connected":
                    await client.wait_for("connected", "disconnected")
                    await asyncio.sleep(0.01)
        assert server.tokens == issued[:2] == ["token-1", "token-2"]
    assert [c.state for c in changes] == [
        "connecting", "connected", "disconnected", "connecting", "connected", "closed"
    ]  # fmt: skip
    assert changes[2].code == code


async def test_4401_asks_for_a_new_token_before_reconnecting() -> None:
    async def expire(peer: Peer) -> None:
        await peer.close(4401, "token expired")

    issued, get_token = counter_token()
    async with FakeServer([expire]) as server, Client(server.url, get_token, **FAST) as client:
        async with asyncio.timeout(10):
            while client.connections < 2:
                await client.wait_for("connecting")
                await asyncio.sleep(0.01)
        assert server.tokens == ["token-1", "token-2"] == issued


async def test_a_normal_close_from_the_server_is_terminal() -> None:
    async def bye(peer: Peer) -> None:
        await peer.op("subscribe")
        await peer.close(1000, "bye")

    _, get_token = counter_token()
    async with FakeServer([bye]) as server:
        client = Client(server.url, get_token, **FAST)
        await client.connect()
        sub = client.subscribe("user:1")
        assert await client.wait_for("closed") == "closed"
        assert [f async for f in sub] == []  # the iteration simply ends
        assert client.connections == 1
        await client.close()


async def test_handshakes_refused_401_three_times_end_unauthorized() -> None:
    issued, get_token = counter_token()
    async with FakeServer([], refuse=[401, 401, 401]) as server:
        client = Client(server.url, get_token, **FAST)
        with pytest.raises(Unauthorized):
            await client.connect()
        assert client.state == "unauthorized" and len(issued) == 3
        await client.close()


async def test_a_refused_handshake_429_backs_off_and_connects() -> None:
    _, get_token = counter_token()
    async with FakeServer([], refuse=[429, 401]) as server:
        async with Client(server.url, get_token, **FAST) as client:
            assert client.connections == 1
        assert len(server.tokens) == 3


async def test_concurrent_token_requests_share_one_get_token_call() -> None:
    from kuda.client.tokens import TokenSource

    calls = 0
    gate = asyncio.Event()

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "t"

    source = TokenSource(slow)
    waiters = [asyncio.create_task(source.fresh()) for _ in range(5)]
    await asyncio.sleep(0.01)
    gate.set()
    assert {t.value for t in await asyncio.gather(*waiters)} == {"t"} and calls == 1


async def test_a_live_only_channel_yields_a_reset_after_a_reconnect() -> None:
    """`rides` has no history: after a reconnect the consumer is told to refetch."""

    async def subscribe_then_drop(peer: Peer) -> None:
        op = await peer.op("subscribe")
        await peer.send({"type": "subscribed", "channel": "rides", "recovered": True,
                         "id": op["id"]})  # fmt: skip
        await peer.send({"type": "event", "channel": "rides", "event": "ride.created",
                         "data": {"id": 1}, "at": "x"})  # fmt: skip
        await peer.close(1012)

    async def subscribe_again(peer: Peer) -> None:
        op = await peer.op("subscribe")
        assert "since" not in op
        await peer.send({"type": "subscribed", "channel": "rides", "recovered": True,
                         "id": op["id"]})  # fmt: skip
        await peer.send({"type": "event", "channel": "rides", "event": "ride.created",
                         "data": {"id": 2}, "at": "x"})  # fmt: skip

    _, get_token = counter_token()
    scripts = [subscribe_then_drop, subscribe_again]
    async with FakeServer(scripts) as server, Client(server.url, get_token, **FAST) as client:
        frames = await take(client.subscribe("rides"), 3)
    assert [(f["type"], f.get("data")) for f in frames] == [
        ("event", {"id": 1}), ("reset", None), ("event", {"id": 2})
    ]  # fmt: skip
    assert frames[1] == {"type": "reset", "channel": "rides", "seq": None}
