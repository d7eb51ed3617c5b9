"""Kuda on a Redis Cluster (sharded pub/sub) and on Sentinel, against real test-owned servers:
a 3-shard cluster (3 primaries, 3 replicas) and a primary + replica watched by 3 sentinels.

Everything that uses Redis works in each mode (fan-out between instances, WebSocket tickets,
the ride cache, rate limits), and a primary killed mid-stream loses nothing durable: every
subscriber ends with every committed event of its channel, in order, once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import RedisCluster
from websockets.exceptions import InvalidStatus

from channels import append
from channels.brokers import RedisClusterBroker, RedisTopology
from tests.cluster import Cluster
from tests.conftest import make_settings
from tests.domain.conftest import make_ride
from tests.helpers import Account, assert_error, login, signup
from tests.live import LiveServer, WsClient, ws_connect
from tests.redis_server import RedisClusterServers, RedisSentinelServers

pytestmark = pytest.mark.slow

MODES = ["cluster", "sentinel"]


@pytest.fixture(params=MODES)
def topology(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings overrides for one Redis mode."""
    if request.param == "cluster":
        servers: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return {"redis_url": servers.url, "redis_mode": "cluster"}
    sentinel: RedisSentinelServers = request.getfixturevalue("redis_sentinel")
    return {
        "redis_url": sentinel.url,
        "redis_mode": "sentinel",
        "redis_sentinel_service": sentinel.service,
    }


async def _until(condition: Callable[[], Any], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def _subscribe(ws: WsClient, channel: str) -> None:
    await ws.expect("welcome")
    reply = await ws.request({"op": "subscribe", "channel": channel})
    assert reply["type"] == "subscribed", reply


async def test_every_redis_user_works_across_instances(
    live_factory: Callable[..., Any], topology: dict[str, str], redis_prefix: str
) -> None:
    a: LiveServer = await live_factory(
        **topology, redis_prefix=redis_prefix, login_failures_per_email=2
    )
    b: LiveServer = await live_factory(
        **topology, redis_prefix=redis_prefix, login_failures_per_email=2
    )
    assert a.app.state.realtime.broker.kind == f"redis-{topology['redis_mode']}"
    async with (
        httpx.AsyncClient(base_url=a.http) as http_a,
        httpx.AsyncClient(base_url=b.http) as http_b,
    ):
        driver, passenger = await signup(http_a), await signup(http_b)
        for http in (http_a, http_b):
            ready = (await http.get("/readyz")).json()
            assert ready["status"] == "ok", ready

        # A ticket issued by A is good once, on B.
        ticket = (await http_a.post("/api/v1/auth/ws-ticket", headers=driver.headers)).json()
        async with ws_connect(f"{b.ws_url}?ticket={ticket['ticket']}") as ws:
            # ... and a ride created through A reaches the driver's socket on B.
            await _subscribe(ws, f"user:{driver.id}")
            ride = await make_ride(http_a, driver, seats_total=3, instant_booking=True)
            booked = await http_a.post(
                f"/api/v1/rides/{ride['id']}/bookings", json={"seats": 1},
                headers=passenger.headers,
            )  # fmt: skip
            assert booked.status_code == 201, booked.text
            event = await ws.recv(timeout=10)
            assert event["type"] == "event" and event["channel"] == f"user:{driver.id}", event
        with pytest.raises(InvalidStatus) as refused:  # used up
            async with ws_connect(f"{b.ws_url}?ticket={ticket['ticket']}"):
                pass
        assert refused.value.response.status_code == 401

        # The ride cache: filled by B, invalidated by a write on A, never stale on B.
        url = f"/api/v1/rides/{ride['id']}"
        assert (await http_b.get(url, headers=passenger.headers)).json()["notes"] is None
        assert b.app.state.cache.misses >= 1
        assert (await http_b.get(url, headers=passenger.headers)).status_code == 200
        assert b.app.state.cache.hits >= 1
        patched = await http_a.patch(url, json={"notes": "Gate 2"}, headers=driver.headers)
        assert patched.status_code == 200, patched.text
        assert (await http_b.get(url, headers=passenger.headers)).json()["notes"] == "Gate 2"

        # Login failures are counted across instances (from clients without a device cookie,
        # which would have a window of their own).
        http_a.cookies.clear()
        http_b.cookies.clear()
        assert (await login(http_a, passenger.email, "wrong-password")).status_code == 401
        assert (await login(http_b, passenger.email, "wrong-password")).status_code == 401
        assert_error(await login(http_a, passenger.email), 429, "rate_limited")


async def test_cluster_channels_are_sharded_and_survive_a_failover(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    """The broker alone: channels spread over the shards (SSUBSCRIBE on each owner), and a
    killed primary is replaced by its replica without the broker being restarted."""
    received: list[tuple[str, bytes]] = []
    resyncs: list[float] = []

    async def on_resync() -> None:
        resyncs.append(time.monotonic())

    topology = RedisTopology.parse(redis_cluster.url, "cluster")
    broker = RedisClusterBroker(topology, redis_prefix, max_backoff_s=0.5)
    await broker.start(lambda c, m: received.append((c, m)), on_resync)
    channels = [f"ride:{i}" for i in range(30)]
    try:
        for channel in channels:
            await broker.subscribe(channel)
        client: RedisCluster = topology.client()  # type: ignore[assignment]
        try:
            await client.initialize()
            counts = [
                len(await client.execute_command("PUBSUB SHARDCHANNELS", target_nodes=node))
                for node in client.get_primaries()
            ]
        finally:
            await client.aclose()
        assert sum(counts) == 30 and all(counts), counts  # every shard carries some channels
        await broker.publish([(c, b"before") for c in channels])
        await _until(lambda: _true(len(received) == 30), "30 messages before the failover")

        victim = redis_cluster.primary_for(f"{redis_prefix}ch:{channels[0]}")
        victim.kill()
        try:
            # Healthy again, and resynced after the first connect and after the failover.
            await _until(
                lambda: _true(broker.healthy and broker.reconnects >= 1 and len(resyncs) >= 2),
                "broker reconnect and resync",
            )
            received.clear()
            await broker.publish([(c, b"after") for c in channels])
            await _until(lambda: _true(len(received) == 30), "30 messages after the failover")
            assert sorted(c for c, _ in received) == sorted(channels)
        finally:
            victim.start()  # it rejoins as a replica of its promoted replica
            await asyncio.to_thread(redis_cluster.wait_ok)
    finally:
        await broker.stop()


async def _true(value: bool) -> bool:
    return value


async def _kill_primary(servers: Any, key: str) -> Callable[[], None]:
    """Kill the primary that serves `key`; returns how to bring it back (as a replica)."""
    if isinstance(servers, RedisClusterServers):
        victim = servers.primary_for(key)
        victim.kill()

        def restore_cluster() -> None:
            victim.start()
            servers.wait_ok()

        return restore_cluster
    port = servers.current_primary_port()
    victim = next(s for s in (servers.primary, servers.replica) if s.port == port)
    victim.kill()

    def restore_sentinel() -> None:
        victim.start()  # the sentinels turn it into a replica of the new primary

    return restore_sentinel


async def _stream(b: LiveServer, channels: list[str], rounds: range) -> None:
    for i in rounds:
        async with b.sessionmaker() as session:
            for channel in channels:
                await append(session, channel, "test.event", {"i": i})
            await session.commit()
        await asyncio.sleep(0.01)


async def _broker_ok(http: httpx.AsyncClient, base_url: str) -> bool:
    try:
        body = (await http.get(base_url + "/readyz")).json()
    except httpx.HTTPError:
        return False
    return bool(body["dependencies"]["broker"]["status"] == "ok")


async def test_primary_killed_mid_stream_loses_nothing(
    cluster_factory: Callable[..., Cluster],
    topology: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    mode = topology["redis_mode"]
    servers: Any = request.getfixturevalue(f"redis_{mode}")
    extra = {"sentinel_service": topology["redis_sentinel_service"]} if mode == "sentinel" else {}
    cluster = cluster_factory(topology["redis_url"], mode, **extra)
    a = await cluster.process()
    b = await cluster.in_process()
    async with httpx.AsyncClient(base_url=a.base_url) as http:
        accounts: list[Account] = [await signup(http) for _ in range(6)]
    channels = [f"user:{acc.id}" for acc in accounts]
    contexts = [ws_connect(f"ws://127.0.0.1:{a.port}/ws", acc.access_token) for acc in accounts]
    sockets: list[WsClient] = [await ctx.__aenter__() for ctx in contexts]
    restore: Callable[[], None] | None = None
    try:
        for ws, channel in zip(sockets, channels, strict=True):
            await _subscribe(ws, channel)
        await _stream(b, channels, range(1, 31))
        restore = await _kill_primary(servers, f"{cluster.prefix}ch:{channels[0]}")
        written, deadline = 30, time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            # Keep writing through the failover until both instances' brokers are back.
            while not (await _broker_ok(http, a.base_url) and await _broker_ok(http, b.http)):
                assert time.monotonic() < deadline, "the brokers did not recover in time"
                await _stream(b, channels, range(written + 1, written + 2))
                written += 1
                await asyncio.sleep(0.1)
        total = written + 30
        await _stream(b, channels, range(written + 1, total + 1))
        for ws in sockets:
            assert [e["seq"] for e in await ws.events(total, timeout=60)] == list(
                range(1, total + 1)
            )
        for ws in sockets:
            assert await ws.silent(0.5)  # and nothing twice
    finally:
        for ctx in contexts:
            await ctx.__aexit__(None, None, None)
        if restore is not None:
            await asyncio.to_thread(restore)


@pytest.mark.parametrize(
    ("url", "mode", "message"),
    [
        ("redis://a:6379,redis://b:6379", "single", "REDIS_MODE=cluster or sentinel"),
        ("redis://a:6379", "ring", "'single', 'cluster' or 'sentinel'"),
        ("http://a:6379", "cluster", "redis:// or rediss://"),
        ("redis://a:6379/2", "cluster", "only database 0"),
    ],
)
def test_a_redis_setting_that_cannot_work_is_refused_at_startup(
    url: str, mode: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        make_settings("postgresql://x@127.0.0.1/x", redis_url=url, redis_mode=mode)


def test_topology_describes_itself_without_credentials() -> None:
    topology = RedisTopology.parse("rediss://:s3cret@a:7000,rediss://b", "sentinel", "kuda")
    assert topology.describe() == "sentinel rediss://a:7000,b:6379 service=kuda"
    assert "s3cret" not in topology.describe()
