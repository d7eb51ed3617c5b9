"""Several real instances on one PostgreSQL and one Redis: fan-out, resume, outages, SIGTERM.

Instance A is a `kuda serve` process; instance B is the same app served by uvicorn inside the
test process (so the test can append events through it with the app's own session factory).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from channels import append
from channels.codes import CloseCode
from tests.cluster import Cluster
from tests.helpers import Account, signup
from tests.live import LiveServer, WsClient, ws_connect
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def _append(b: LiveServer, channel: str, n: int, start: int = 1) -> None:
    async with b.sessionmaker() as s:
        for i in range(start, start + n):
            await append(s, channel, "test.event", {"i": i})
        await s.commit()


async def _account(base_url: str) -> Account:
    async with httpx.AsyncClient(base_url=base_url) as http:
        return await signup(http)


async def _subscribed(url: str, token: str, channel: str, since: int | None = None) -> Any:
    ctx = ws_connect(url, token)
    ws: WsClient = await ctx.__aenter__()
    await ws.expect("welcome")
    frame: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if since is not None:
        frame["since"] = since
    await ws.send(frame)
    return ctx, ws


async def _collect_until_ack(ws: WsClient) -> tuple[list[int], dict[str, Any]]:
    seqs = []
    while True:
        frame = await ws.recv()
        if frame["type"] == "subscribed":
            return seqs, frame
        seqs.append(frame["seq"])


async def test_event_through_b_reaches_a_once_in_order_and_1000_arrive_on_both(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    from tests import services

    cluster = cluster_factory(services.REDIS_URL)
    a = await cluster.process()
    b = await cluster.in_process()
    account = await _account(a.base_url)
    channel = f"user:{account.id}"
    ctx_a, on_a = await _subscribed(f"ws://127.0.0.1:{a.port}/ws", account.access_token, channel)
    ctx_b, on_b = await _subscribed(b.ws_url, account.access_token, channel)
    try:
        await on_a.expect("subscribed")
        await on_b.expect("subscribed")
        await _append(b, channel, 1)
        (first,) = await on_a.events(1)
        assert first["seq"] == 1 and first["data"] == {"i": 1}
        assert await on_a.silent(0.5)  # once
        reader_a = asyncio.create_task(on_a.events(1000, timeout=30))
        reader_b = asyncio.create_task(on_b.events(1001, timeout=30))
        for start in range(2, 1002, 100):
            await _append(b, channel, 100, start=start)
        assert [e["seq"] for e in await reader_a] == list(range(2, 1002))
        assert [e["seq"] for e in await reader_b] == list(range(1, 1002))
        assert await on_a.silent(0.3)
    finally:
        await ctx_a.__aexit__(None, None, None)
        await ctx_b.__aexit__(None, None, None)


async def test_resume_with_since_across_instances_and_after_restart(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    from tests import services

    cluster = cluster_factory(services.REDIS_URL)
    a = await cluster.process()
    b = await cluster.in_process()
    account = await _account(a.base_url)
    channel = f"user:{account.id}"
    await _append(b, channel, 5)
    # On A, then gone while 100 events happen; resume on B.
    ctx, ws = await _subscribed(f"ws://127.0.0.1:{a.port}/ws", account.access_token, channel, 0)
    seqs, ack = await _collect_until_ack(ws)
    assert seqs == [1, 2, 3, 4, 5] and ack["seq"] == 5
    await ctx.__aexit__(None, None, None)
    await _append(b, channel, 100, start=6)
    ctx, ws = await _subscribed(b.ws_url, account.access_token, channel, 5)
    seqs, ack = await _collect_until_ack(ws)
    assert seqs == list(range(6, 106)) and ack == {**ack, "seq": 105, "recovered": True}
    await _append(b, channel, 1, start=106)
    assert [e["seq"] for e in await ws.events(1)] == [106]
    await ctx.__aexit__(None, None, None)
    # On A again; A restarts; 100 more events; resume on the new A.
    ctx, ws = await _subscribed(f"ws://127.0.0.1:{a.port}/ws", account.access_token, channel, 106)
    await ws.expect("subscribed")
    await asyncio.to_thread(a.stop, signal.SIGTERM)
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.conn.close_code == CloseCode.RESTART
    await ctx.__aexit__(None, None, None)
    await _append(b, channel, 100, start=107)
    a2 = await cluster.process("a2")
    ctx, ws = await _subscribed(f"ws://127.0.0.1:{a2.port}/ws", account.access_token, channel, 106)
    seqs, ack = await _collect_until_ack(ws)
    assert seqs == list(range(107, 207)) and ack["recovered"] is True
    await _append(b, channel, 1, start=207)
    assert [e["seq"] for e in await ws.events(1)] == [207]
    await ctx.__aexit__(None, None, None)


async def test_redis_outage_loses_nothing_and_rest_keeps_answering(
    cluster_factory: Callable[[str], Cluster], redis_server: RedisServer
) -> None:
    cluster = cluster_factory(redis_server.url)
    a = await cluster.process()
    b = await cluster.in_process()
    account = await _account(a.base_url)
    channel = f"user:{account.id}"
    ctx, ws = await _subscribed(f"ws://127.0.0.1:{a.port}/ws", account.access_token, channel)
    try:
        await ws.expect("subscribed")
        reader = asyncio.create_task(ws.events(300, timeout=60))
        await _append(b, channel, 100)
        redis_server.kill()
        async with httpx.AsyncClient() as http:
            await _until(lambda: _ready_status(http, a.base_url), "degraded")
            await _until(lambda: _ready_status(http, b.http), "degraded")
            for i in range(101, 201):  # appended while Redis is down
                await _append(b, channel, 1, start=i)
            assert (await http.get(a.base_url + "/healthz")).status_code == 200
            other = await _account(a.base_url)  # REST keeps answering on A
            assert other.id > account.id
            redis_server.start()
            await _append(b, channel, 100, start=201)
            await _until(lambda: _ready_status(http, a.base_url), "ok")
            await _until(lambda: _ready_status(http, b.http), "ok")
        assert [e["seq"] for e in await reader] == list(range(1, 301))
        assert await ws.silent(1.0)
    finally:
        await ctx.__aexit__(None, None, None)


async def test_sigterm_closes_1012_and_client_resumes_on_the_other_instance(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    from tests import services

    cluster = cluster_factory(services.REDIS_URL)
    a = await cluster.process()
    b = await cluster.in_process()
    account = await _account(a.base_url)
    channel = f"user:{account.id}"
    ctx, ws = await _subscribed(f"ws://127.0.0.1:{a.port}/ws", account.access_token, channel)
    await ws.expect("subscribed")
    writer = asyncio.create_task(_append_slowly(b, channel, 200))
    received: list[int] = []
    try:
        while len(received) < 20:
            received.append((await ws.recv())["seq"])
        stopping = asyncio.create_task(asyncio.to_thread(a.stop, signal.SIGTERM))
        with pytest.raises(ConnectionClosed):
            while True:
                received.append((await ws.recv())["seq"])
        assert ws.conn.close_code == CloseCode.RESTART
        assert await stopping == 0
    finally:
        await ctx.__aexit__(None, None, None)
    ctx, ws = await _subscribed(b.ws_url, account.access_token, channel, received[-1])
    try:
        await writer
        while len(received) < 200:
            frame = await ws.recv()
            if frame["type"] == "event":
                received.append(frame["seq"])
        assert received == list(range(1, 201))
        assert await ws.silent(0.5)
    finally:
        await ctx.__aexit__(None, None, None)


async def _append_slowly(b: LiveServer, channel: str, n: int) -> None:
    for i in range(1, n + 1):
        await _append(b, channel, 1, start=i)
        await asyncio.sleep(0.005)


async def _ready_status(http: httpx.AsyncClient, base_url: str) -> str:
    r = await http.get(base_url + "/readyz")
    return str(r.json()["status"])


async def _until(probe: Callable[[], Any], expected: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while (value := await probe()) != expected:
            await asyncio.sleep(0.1)
    assert value == expected


async def test_two_kuda_serve_processes_fan_out_rest_changes_through_redis(
    cluster_factory: Callable[[str], Cluster], redis: Any
) -> None:
    """Both instances are `kuda serve` processes: changes made over REST on B reach sockets on
    A once and in order; 1,000 chat messages arrive complete and ordered on both."""
    from tests import services

    cluster = cluster_factory(services.REDIS_URL)
    unlimited = {"WRITE_RATE_PER_USER": "0"}  # one driver posts the 1,000 messages
    a, b = await cluster.process("a", **unlimited), await cluster.process("b", **unlimited)
    ws_a, ws_b = f"ws://127.0.0.1:{a.port}/ws", f"ws://127.0.0.1:{b.port}/ws"
    async with httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b:
        driver, passenger = await signup(on_b), await signup(on_b)
        body = {"origin": "Innopolis", "destination": "Kazan", "seats_total": 3,
                "departure_at": "2030-01-01T08:00:00Z", "instant_booking": True}  # fmt: skip
        ride = (await on_b.post("/api/v1/rides", json=body, headers=driver.headers)).json()
        chat = f"ride:{ride['id']}:chat"
        watcher_ctx, watcher = await _subscribed(ws_a, passenger.access_token, f"ride:{ride['id']}")
        await watcher.expect("subscribed")
        booking = await on_b.post(
            f"/api/v1/rides/{ride['id']}/bookings", json={"seats": 1}, headers=passenger.headers
        )
        assert booking.status_code == 201
        (confirmed,) = await watcher.events(1)
        assert confirmed["event"] == "booking.confirmed" and confirmed["seq"] == 1
        assert confirmed["data"]["seats_available"] == 2
        contexts = []
        sockets = []
        for url, who in ((ws_a, driver), (ws_b, passenger)):
            ctx, ws = await _subscribed(url, who.access_token, chat)
            await ws.expect("subscribed")
            contexts.append(ctx)
            sockets.append(ws)
        try:
            readers = [asyncio.create_task(_messages(ws, 1000)) for ws in sockets]
            lanes = asyncio.Semaphore(8)

            async def post(i: int) -> None:
                async with lanes:
                    r = await on_b.post(
                        f"/api/v1/rides/{ride['id']}/messages",
                        json={"body": f"message {i}"},
                        headers=driver.headers,
                    )
                    assert r.status_code == 201

            await asyncio.gather(*(post(i) for i in range(1000)))
            for reader in readers:
                seqs, bodies = await reader
                assert seqs == list(range(1, 1001))
                assert sorted(bodies) == sorted(f"message {i}" for i in range(1000))
            assert await watcher.silent(0.3)
        finally:
            for ctx in [watcher_ctx, *contexts]:
                await ctx.__aexit__(None, None, None)


async def _messages(ws: WsClient, n: int) -> tuple[list[int], list[str]]:
    seqs, bodies = [], []
    while len(seqs) < n:
        frame = await ws.recv(timeout=30)
        if frame["type"] == "event" and frame["event"] == "message.created":
            seqs.append(frame["seq"])
            bodies.append(frame["data"]["body"])
    return seqs, bodies
