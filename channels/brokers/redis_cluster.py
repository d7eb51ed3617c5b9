"""Redis Cluster broker: sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis >= 7) on redis-py's
`RedisCluster` and `ClusterPubSub`.

A channel's messages travel only inside the shard that owns its slot, so pub/sub traffic
scales with the number of shards instead of being broadcast to every node (what plain
`PUBLISH` does in a cluster). redis-py routes each channel to its shard and keeps one pub/sub
connection per node; this broker reads each of those connections in its own task.

Failures are handled the way the single-node broker handles them: any lost connection (a
primary killed, a failover, a topology change the subscriptions did not follow) tears the
subscriptions down, refreshes the slot map, subscribes every channel again with capped
exponential backoff, and asks the hub to resync from PostgreSQL what may have been missed.
Publishing to a shard that is down raises `BrokerUnavailable`, and the outbox relay publishes
those events once the shard (or its promoted replica) answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import RedisClusterException, RedisError

from channels.brokers.base import BrokerUnavailable, MessageHandler, ResyncHandler
from channels.brokers.signals import Confirmations
from channels.brokers.topology import RedisTopology

log = logging.getLogger("kuda.broker.redis_cluster")

# What redis-py raises when a shard is unreachable or the slot map is being rebuilt.
FAILURES = (RedisError, RedisClusterException, OSError)

SUBSCRIBE_CHUNK = 500
READ_TIMEOUT_S = 1.0


class RedisClusterBroker:
    kind = "redis-cluster"

    def __init__(
        self,
        topology: RedisTopology,
        prefix: str,
        *,
        confirm_timeout_s: float = 2.0,
        max_backoff_s: float = 5.0,
        max_connections: int = 32,
    ) -> None:
        assert topology.mode == "cluster"
        self._prefix = prefix + "ch:"
        client = topology.client(
            max_connections=max_connections, socket_connect_timeout=2, socket_timeout=5
        )
        assert isinstance(client, RedisCluster)
        self._client = client
        self._confirm_timeout_s = confirm_timeout_s
        self._max_backoff_s = max_backoff_s
        self._channels: set[str] = set()
        self._confirm = Confirmations()
        self._unconfirmed: set[bytes] = set()  # sent by the current connect, not yet confirmed
        self._pubsub: ClusterPubSub | None = None
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._lost = asyncio.Event()
        self._healthy = False
        self._task: asyncio.Task[None] | None = None
        self._on_message: MessageHandler | None = None
        self._connected_once = False
        self.reconnects = 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self, on_message: MessageHandler, on_resync: ResyncHandler) -> None:
        self._on_message = on_message
        self._confirm.bind(on_resync)
        connected = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(connected), name="kuda-redis-cluster")
        with contextlib.suppress(TimeoutError):  # start degraded; the listener keeps trying
            await asyncio.wait_for(asyncio.shield(connected), self._confirm_timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._teardown()
        await self._confirm.stop()
        await self._client.aclose()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is None or not self._healthy:
            return  # recorded; subscribed on reconnect, then resynced
        key = self._key(channel)
        waiter = self._confirm.waiter(key)
        try:
            await pubsub.ssubscribe(key)
            self._start_readers(pubsub)
            await asyncio.wait_for(waiter, self._confirm_timeout_s)
        except FAILURES as exc:
            log.warning("ssubscribe %s failed (%s); reconnecting", channel, exc)
            self._lost.set()
        except TimeoutError:
            log.warning("ssubscribe %s not confirmed; the periodic resync covers it", channel)
        finally:
            self._confirm.forget(key, waiter)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None and self._healthy:
            with contextlib.suppress(*FAILURES):
                await pubsub.sunsubscribe(self._key(channel))

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, message in messages:
                    pipe.spublish(self._key(channel), message)
                await pipe.execute()
        except FAILURES as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    async def ping(self) -> None:
        await self._client.ping()

    def _key(self, channel: str) -> bytes:
        return (self._prefix + channel).encode()

    # Connection lifecycle -----------------------------------------------------------------

    async def _listen(self, connected: asyncio.Future[None]) -> None:
        delay = 0.1
        while True:
            try:
                await self._connect()
                if not connected.done():
                    connected.set_result(None)
                delay = 0.1
                await self._lost.wait()
                raise ConnectionError("a shard's pub/sub connection was lost")
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                if self._healthy or not connected.done():
                    log.warning("Redis Cluster pub/sub lost: %s", exc)
                self._healthy = False
                await self._teardown()
                await asyncio.sleep(delay * (1 + random.random() / 2))  # noqa: S311 - jitter
                delay = min(delay * 2, self._max_backoff_s)

    async def _connect(self) -> None:
        self._lost.clear()
        # A fresh slot map: after a failover the cached one still names the dead primary.
        await self._client.nodes_manager.initialize()
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        sent: set[str] = set()
        while pending := self._channels - sent:
            keys = [self._key(c) for c in pending]
            sent |= pending
            self._unconfirmed.update(keys)
            for i in range(0, len(keys), SUBSCRIBE_CHUNK):
                await pubsub.ssubscribe(*keys[i : i + SUBSCRIBE_CHUNK])
            self._start_readers(pubsub)
        if self._connected_once:
            self.reconnects += 1
            log.info("Redis Cluster pub/sub reconnected; %d channels re-subscribed", len(sent))
        self._connected_once = True
        self._healthy = True
        if not self._unconfirmed:
            self._confirm.request_resync()

    def _start_readers(self, pubsub: ClusterPubSub) -> None:
        """One reader per node that holds subscriptions (redis-py adds nodes lazily)."""
        for name in list(pubsub.node_pubsub_mapping):
            task = self._readers.get(name)
            if task is None or task.done():
                self._readers[name] = asyncio.create_task(
                    self._read(pubsub, name), name=f"kuda-redis-cluster-{name}"
                )

    async def _read(self, pubsub: ClusterPubSub, name: str) -> None:
        try:
            while pubsub is self._pubsub and name in pubsub.node_pubsub_mapping:
                node = self._client.get_node(node_name=name)
                if node is None:  # the node left the topology with our subscriptions on it
                    raise ConnectionError(f"node {name} left the cluster")
                message = await pubsub.get_sharded_message(
                    ignore_subscribe_messages=False, timeout=READ_TIMEOUT_S, target_node=node
                )
                if message is not None:
                    self._handle(message)
        except asyncio.CancelledError:
            raise
        except FAILURES as exc:
            if pubsub is self._pubsub:
                log.warning("Redis Cluster node %s: %s", name, exc)
                self._lost.set()

    def _handle(self, message: dict[str, Any]) -> None:
        kind, key = message["type"], message["channel"]
        if kind == "smessage" and self._on_message is not None:
            self._on_message(key.decode()[len(self._prefix) :], message["data"])
        elif kind == "ssubscribe":
            awaited = self._confirm.confirmed(key)
            if key in self._unconfirmed:
                self._unconfirmed.discard(key)
                if not self._unconfirmed:
                    self._confirm.request_resync()  # every channel of this connect is live
            elif not awaited:
                # redis-py re-subscribed on its own after reconnecting a node: what was
                # published meanwhile must come from PostgreSQL.
                self._confirm.request_resync()

    async def _teardown(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        readers, self._readers = list(self._readers.values()), {}
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._unconfirmed.clear()
        self._confirm.release_all()
        if pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()
