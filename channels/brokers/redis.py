"""Redis pub/sub broker on `redis.asyncio`, for one server or a Sentinel-managed primary.

One pub/sub connection per instance carries every channel subscription; publishing uses a
pipelined connection from a blocking pool (redis-py 8 pools raise instead of waiting by
default). The listener reconnects with capped exponential backoff and re-subscribes every
channel, then asks the hub to resync from PostgreSQL what may have been missed meanwhile.
With Sentinel, redis-py's `SentinelConnectionPool` finds the current primary on each
(re)connect, so a failover is one more reconnect. Redis Cluster: `redis_cluster.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from channels.brokers.base import BrokerUnavailable, MessageHandler, ResyncHandler
from channels.brokers.signals import Confirmations
from channels.brokers.topology import RedisTopology

log = logging.getLogger("kuda.broker.redis")

SUBSCRIBE_CHUNK = 500


class RedisBroker:
    kind = "redis"

    def __init__(
        self,
        target: str | RedisTopology,
        prefix: str,
        *,
        confirm_timeout_s: float = 2.0,
        max_backoff_s: float = 5.0,
        max_connections: int = 32,
    ) -> None:
        self._prefix = prefix + "ch:"
        self._control = self._prefix.encode() + b"\x00control"
        topology = RedisTopology.parse(target) if isinstance(target, str) else target
        if topology.mode == "cluster":
            raise ValueError("Redis Cluster needs RedisClusterBroker (sharded pub/sub)")
        if topology.mode == "sentinel":
            self.kind = "redis-sentinel"
        client = topology.client(
            blocking=True,
            max_connections=max_connections,
            socket_connect_timeout=2,
            health_check_interval=10,
            # redis-py 8 skips the stale-connection check on checkout by default: after a Redis
            # restart, retry once on a fresh connection instead of failing the first publish.
            retry=Retry(NoBackoff(), 1),
        )
        assert isinstance(client, Redis)
        self._client = client
        self._confirm_timeout_s = confirm_timeout_s
        self._max_backoff_s = max_backoff_s
        self._channels: set[str] = set()
        self._confirm = Confirmations()
        self._unconfirmed: set[bytes] = set()  # sent by the current connect, not yet confirmed
        self._pubsub: PubSub | None = None
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
        self._task = asyncio.create_task(self._listen(connected), name="kuda-redis-listener")
        with contextlib.suppress(TimeoutError):  # start degraded; the listener keeps trying
            await asyncio.wait_for(asyncio.shield(connected), self._confirm_timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_pubsub()
        await self._confirm.stop()
        await self._client.aclose(close_connection_pool=True)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is None or not self._healthy:
            return  # recorded; subscribed on reconnect, then resynced
        key = self._key(channel)
        waiter = self._confirm.waiter(key)
        try:
            await pubsub.subscribe(key)
            await asyncio.wait_for(waiter, self._confirm_timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("subscribe %s not confirmed (%s); resync on reconnect", channel, exc)
        finally:
            self._confirm.forget(key, waiter)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None and self._healthy:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(self._key(channel))

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, message in messages:
                    pipe.publish(self._key(channel), message)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    async def ping(self) -> None:
        await self._client.ping()

    def _key(self, channel: str) -> bytes:
        return (self._prefix + channel).encode()

    async def _listen(self, connected: asyncio.Future[None]) -> None:
        delay = 0.1
        while True:
            try:
                # Always resync after (re)connecting: anything published while this instance
                # was not subscribed is fetched from PostgreSQL by the hub.
                await self._connect()
                if not connected.done():
                    connected.set_result(None)
                delay = 0.1
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._healthy or not connected.done():
                    log.warning("Redis pub/sub connection lost: %s", exc)
                self._healthy = False
                await self._close_pubsub()
                await asyncio.sleep(delay * (1 + random.random() / 2))  # noqa: S311 - jitter
                delay = min(delay * 2, self._max_backoff_s)

    async def _connect(self) -> None:
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        self._unconfirmed = {self._control}
        await pubsub.subscribe(self._control)
        sent: set[str] = set()
        # Channels added while we await (their subscribe() saw the broker as unhealthy and
        # only recorded them) are picked up by the next round, before going healthy.
        while pending := self._channels - sent:
            keys = [self._key(c) for c in pending]
            sent |= pending
            self._unconfirmed.update(keys)
            for i in range(0, len(keys), SUBSCRIBE_CHUNK):
                await pubsub.subscribe(*keys[i : i + SUBSCRIBE_CHUNK])
        # Once every confirmation is in (`_handle`), the hub resyncs.
        if self._connected_once:
            self.reconnects += 1
            log.info("Redis pub/sub reconnected; %d channels re-subscribed", len(sent))
        self._connected_once = True
        self._healthy = True

    async def _read_forever(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind, key = message["type"], message["channel"]
        if kind == "message" and key != self._control and self._on_message is not None:
            self._on_message(key.decode()[len(self._prefix) :], message["data"])
        elif kind == "subscribe":
            awaited = self._confirm.confirmed(key)
            if key in self._unconfirmed:
                self._unconfirmed.discard(key)
                if not self._unconfirmed:
                    self._confirm.request_resync()  # every channel of this connect is live
            elif not awaited:
                # redis-py re-subscribed on its own after reconnecting: what was published
                # meanwhile must come from PostgreSQL.
                self._confirm.request_resync()

    async def _close_pubsub(self) -> None:
        self._unconfirmed.clear()
        self._confirm.release_all()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
