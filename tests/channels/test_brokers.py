"""The broker contract, run against the in-process broker, Redis pub/sub and Redis Cluster sharded
pub/sub; then what only Redis can do: lose its server and come back, and carry many channels at
once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from channels.brokers import (
    Broker,
    BrokerUnavailable,
    MemoryBroker,
    RedisBroker,
    RedisClusterBroker,
    RedisTopology,
)
from tests import services
from tests.procs import free_port
from tests.redis_server import RedisClusterServers

WAIT_S = 10.0


class Inbox:
    """Collects what a broker delivers, and how often it asked for a resync."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.resyncs = 0

    def on_message(self, channel: str, message: bytes) -> None:
        self.messages.append((channel, message))

    async def on_resync(self) -> None:
        self.resyncs += 1

    def on(self, channel: str) -> list[bytes]:
        return [m for c, m in self.messages if c == channel]

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        await wait_until(condition, what)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def settled(broker: Broker, *channels: str) -> None:
    """Wait until Redis has applied this instance's pending unsubscribes (UNSUBSCRIBE is not
    acknowledged to the caller); the in-process broker applies them at once."""
    if isinstance(broker, RedisClusterBroker):
        await _settled_shards(broker, channels)
    if not isinstance(broker, RedisBroker):
        return
    client = Redis.from_url(services.REDIS_URL)
    try:
        keys = [broker._key(c) for c in channels]

        async def counts() -> list[int]:
            return [n for _, n in await client.pubsub_numsub(*keys)]

        deadline = time.monotonic() + WAIT_S
        while any(await counts()):
            assert time.monotonic() < deadline, "unsubscribe never reached Redis"
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


async def _settled_shards(broker: RedisClusterBroker, channels: tuple[str, ...]) -> None:
    client: RedisCluster = broker._client
    deadline = time.monotonic() + WAIT_S
    for key in (broker._key(c) for c in channels):
        node = client.get_node_from_key(key)
        while (await client.execute_command("PUBSUB SHARDNUMSUB", key, target_nodes=node))[0][1]:
            assert time.monotonic() < deadline, "sunsubscribe never reached the shard"
            await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "redis":
        request.getfixturevalue("redis")  # fails the test clearly when Redis is not there
    return kind


@pytest.fixture
async def broker(
    broker_kind: str, redis_prefix: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Broker, Inbox]]:
    inbox = Inbox()
    b: Broker
    if broker_kind == "memory":
        b = MemoryBroker()
    elif broker_kind == "redis":
        b = RedisBroker(services.REDIS_URL, redis_prefix)
    else:
        servers: RedisClusterServers = request.getfixturevalue("redis_cluster")
        b = RedisClusterBroker(RedisTopology.parse(servers.url, "cluster"), redis_prefix)
    await b.start(inbox.on_message, inbox.on_resync)
    assert b.healthy
    yield b, inbox
    await b.stop()


# The contract ----------------------------------------------------------------------------------


async def test_a_batch_of_1000_arrives_complete_and_in_order(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("ride:1")
    sent = [b"m%d" % i for i in range(1000)]
    await b.publish([("ride:1", m) for m in sent])
    await inbox.wait_for(lambda: len(inbox.messages) >= 1000, "1,000 messages")
    assert inbox.messages == [("ride:1", m) for m in sent]


async def test_consecutive_batches_keep_publish_order(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("a")
    await b.subscribe("b")
    sent = [("a" if i % 3 else "b", b"%d" % i) for i in range(300)]
    for i in range(0, len(sent), 50):
        await b.publish(sent[i : i + 50])
    await inbox.wait_for(lambda: len(inbox.messages) >= len(sent), "all batches")
    if isinstance(b, RedisClusterBroker):  # two shards: the order holds per channel
        for channel in ("a", "b"):
            assert inbox.on(channel) == [m for c, m in sent if c == channel]
    else:
        assert inbox.messages == sent


async def test_channels_not_subscribed_are_not_delivered(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("mine")
    await b.publish(
        [("other", b"x"), ("mine", b"1"), ("mine-2", b"x"), ("min", b"x"), ("mine", b"end")]
    )
    await inbox.wait_for(lambda: b"end" in inbox.on("mine"), "the last message")
    assert inbox.messages == [("mine", b"1"), ("mine", b"end")]


async def test_unsubscribe_stops_delivery(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("leaving")
    await b.subscribe("staying")
    await b.publish([("leaving", b"before")])
    await inbox.wait_for(lambda: inbox.on("leaving") == [b"before"], "the first message")

    await b.unsubscribe("leaving")
    await settled(b, "leaving")
    await b.publish([("leaving", b"after"), ("staying", b"marker")])
    await inbox.wait_for(lambda: inbox.on("staying") == [b"marker"], "the marker")
    assert inbox.on("leaving") == [b"before"]


async def test_subscribing_again_resumes_delivery(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    await b.subscribe("c")
    await b.unsubscribe("c")
    await settled(b, "c")
    await b.subscribe("c")
    await b.publish([("c", b"back")])
    await inbox.wait_for(lambda: inbox.on("c") == [b"back"], "the message")


async def test_messages_are_delivered_byte_for_byte(broker: tuple[Broker, Inbox]) -> None:
    b, inbox = broker
    channel = "ride:9:chat"
    sent = [b"", b"D 1 0 1.0\n{}", "é✓".encode(), bytes(range(256)), b"x" * 70_000]
    await b.subscribe(channel)
    await b.publish([(channel, m) for m in sent])
    await inbox.wait_for(lambda: len(inbox.messages) >= len(sent), "every message")
    assert inbox.messages == [(channel, m) for m in sent]


# Redis: outage and recovery --------------------------------------------------------------------


class RedisProcess:
    """A test-owned redis-server that can be killed and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", *args, "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + WAIT_S
        try:
            while True:
                assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
                try:
                    await client.ping()
                    return
                except (RedisError, OSError):
                    assert time.monotonic() < deadline, "redis-server did not start"
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    yield server
    server.kill()


async def started(server: RedisProcess, *, restart: bool = True) -> tuple[RedisBroker, Inbox]:
    """A broker instance on `server` (started first unless `restart` is False)."""
    if restart:
        server.start()
    await server.wait_ready()
    inbox = Inbox()
    broker = RedisBroker(server.url, "t:", max_backoff_s=0.5)
    await broker.start(inbox.on_message, inbox.on_resync)
    assert broker.healthy
    await inbox.wait_for(lambda: inbox.resyncs == 1, "the first resync")
    return broker, inbox


async def test_redis_restart_reconnects_resubscribes_and_resyncs(
    redis_process: RedisProcess,
) -> None:
    broker, inbox = await started(redis_process)
    try:
        await broker.subscribe("ride:1")
        await broker.publish([("ride:1", b"before")])
        await inbox.wait_for(lambda: inbox.on("ride:1") == [b"before"], "the first message")

        redis_process.kill()
        await wait_until(lambda: not broker.healthy, "the broker to notice the outage")
        with pytest.raises(BrokerUnavailable):
            await broker.publish([("ride:1", b"lost")])

        redis_process.start()
        await wait_until(lambda: broker.healthy, "the broker to reconnect by itself")
        assert broker.reconnects >= 1
        await inbox.wait_for(lambda: inbox.resyncs >= 2, "a resync after the reconnect")

        # re-subscribed without any call: what another instance publishes now arrives
        other, _ = await started(redis_process, restart=False)
        try:
            await other.publish([("ride:1", b"after")])
        finally:
            await other.stop()
        await inbox.wait_for(lambda: len(inbox.on("ride:1")) >= 2, "the message after restart")
        assert inbox.on("ride:1") == [b"before", b"after"]
    finally:
        await broker.stop()


async def test_publish_works_again_once_reconnected(redis_process: RedisProcess) -> None:
    # Regression (fixed): after a Redis restart, RedisBroker reported `healthy` (listener
    # reconnected) but
    # `publish` raises BrokerUnavailable("Connection closed by server.") on every pooled
    # connection that was idle during the outage. redis-py 8.1's pool skips its stale-socket
    # check in `ensure_connection` when maintenance notifications are on ("auto", the default
    # with RESP3), and the pool's connections have no retry (Retry(NoBackoff(), 0)), so each
    # stale connection fails one publish: durable events wait for the relay, ephemeral ones
    # (typing, presence, the `rides` board) are dropped.
    broker, inbox = await started(redis_process)
    try:
        await broker.subscribe("ride:1")
        await broker.publish([("ride:1", b"before")])
        await inbox.wait_for(lambda: inbox.on("ride:1") == [b"before"], "the first message")

        redis_process.kill()
        await wait_until(lambda: not broker.healthy, "the broker to notice the outage")
        redis_process.start()
        await wait_until(lambda: broker.healthy, "the broker to reconnect by itself")
        await inbox.wait_for(lambda: inbox.resyncs >= 2, "a resync after the reconnect")

        await broker.publish([("ride:1", b"after")])
        await inbox.wait_for(lambda: len(inbox.on("ride:1")) >= 2, "the message after restart")
        assert inbox.on("ride:1") == [b"before", b"after"]
    finally:
        await broker.stop()


async def test_subscribe_during_an_outage_becomes_active_on_reconnect(
    redis_process: RedisProcess,
) -> None:
    broker, inbox = await started(redis_process)
    try:
        redis_process.kill()
        await wait_until(lambda: not broker.healthy, "the broker to notice the outage")
        await broker.subscribe("ride:2")  # recorded, not active yet
        redis_process.start()
        await wait_until(lambda: broker.healthy, "the broker to reconnect")
        await inbox.wait_for(lambda: inbox.resyncs >= 2, "a resync after the reconnect")
        await broker.publish([("ride:2", b"hello")])
        await inbox.wait_for(lambda: inbox.on("ride:2") == [b"hello"], "the message")
    finally:
        await broker.stop()


async def test_subscribe_while_reconnecting_is_not_lost(redis_process: RedisProcess) -> None:
    # Regression (fixed): RedisBroker._connect() snapshotted `self._channels` before its awaits
    # and only then set
    # `_healthy = True`; a `subscribe()` that runs in between sees `healthy` False, returns as
    # "recorded" and is never sent to Redis: that channel gets no live message until the next
    # reconnect (base.Broker.subscribe promises it "becomes active on reconnect").
    broker, inbox = await started(redis_process)
    try:
        redis_process.kill()
        await wait_until(lambda: not broker.healthy, "the broker to notice the outage")
        for c in range(2000):  # many channels: re-subscribing them takes a few writes
            await broker.subscribe(f"old:{c}")

        redis_process.start()
        late: list[str] = []
        deadline = time.monotonic() + WAIT_S
        while not broker.healthy:  # a hub subscribing sockets while Redis comes back
            assert time.monotonic() < deadline, "the broker did not reconnect"
            late.append(f"late:{len(late)}")
            await broker.subscribe(late[-1])
            await asyncio.sleep(0.0005)
        await inbox.wait_for(lambda: inbox.resyncs >= 2, "a resync after the reconnect")

        await broker.publish([(c, b"live") for c in late])
        await broker.publish([("old:0", b"marker")])
        await inbox.wait_for(lambda: inbox.on("old:0") == [b"marker"], "the marker")
        missing = [c for c in late if inbox.on(c) != [b"live"]]
        assert missing == [], f"{len(missing)} of {len(late)} subscriptions never became active"
    finally:
        await broker.stop()


# Redis: many channels --------------------------------------------------------------------------


async def test_redis_delivers_everything_on_200_channels(redis: Redis, redis_prefix: str) -> None:
    inbox = Inbox()
    broker = RedisBroker(services.REDIS_URL, redis_prefix)
    await broker.start(inbox.on_message, inbox.on_resync)
    try:
        channels = [f"ride:{i}" for i in range(200)]
        for channel in channels:
            await broker.subscribe(channel)
        sent = [(c, b"%d" % n) for n in range(20) for c in channels]
        for i in range(0, len(sent), 500):
            await broker.publish(sent[i : i + 500])
        await inbox.wait_for(lambda: len(inbox.messages) >= 4000, "4,000 messages")

        assert len(inbox.messages) == 4000
        by_channel: dict[str, list[bytes]] = defaultdict(list)
        for channel, message in inbox.messages:
            by_channel[channel].append(message)
        expected = [b"%d" % n for n in range(20)]
        assert sorted(by_channel) == sorted(channels)
        assert all(by_channel[c] == expected for c in channels)
    finally:
        await broker.stop()
