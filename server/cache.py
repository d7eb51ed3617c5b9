"""Cache-aside for ride details and public profiles, in Redis; skipped without Redis.

Never stale after a write: writers invalidate after their commit (bumping a per-key stamp, then
deleting the value), and readers only fill the cache if the stamp they saw before reading
PostgreSQL is unchanged (an atomic compare-and-set in Lua). A reader that raced a writer
therefore never stores the old value.

On a Redis Cluster a value and its stamp share a hash tag (`kuda:cache:{ride:7}` and
`kuda:cache:{ride:7}:stamp`), so the MGET, the script and the invalidating transaction stay in
one slot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from channels.brokers import RedisClient, RedisTopology, same_slot

log = logging.getLogger("kuda.cache")

Loader = Callable[[], Awaitable[dict[str, Any] | None]]

_SET_IF_STAMP = """
local stamp = redis.call('GET', KEYS[2]) or ''
if stamp == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


class Cache(Protocol):
    async def get_or_load(self, key: str, loader: Loader) -> dict[str, Any] | None: ...

    async def invalidate(self, *keys: str) -> None: ...


class NoCache:
    async def get_or_load(self, key: str, loader: Loader) -> dict[str, Any] | None:
        return await loader()

    async def invalidate(self, *keys: str) -> None:
        return None


class RedisCache:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        ttl_s: int = 300,
        topology: RedisTopology | None = None,
    ) -> None:
        self._redis = redis
        self._tagged = topology is not None and topology.mode == "cluster"
        self._prefix = prefix + "cache:"
        self._ttl_s = ttl_s
        self._set_if_stamp = redis.register_script(_SET_IF_STAMP)
        self.hits = 0
        self.misses = 0

    def _keys(self, key: str) -> tuple[str, str]:
        value_key, stamp_key = same_slot(self._prefix, key, "", ":stamp", tagged=self._tagged)
        return value_key, stamp_key

    async def get_or_load(self, key: str, loader: Loader) -> dict[str, Any] | None:
        k, stamp_key = self._keys(key)
        try:
            cached, stamp = await self._redis.mget(k, stamp_key)
        except RedisError as exc:
            log.info("cache unavailable (%s); reading PostgreSQL", exc)
            return await loader()
        if cached is not None:
            self.hits += 1
            value: dict[str, Any] = orjson.loads(cached)
            return value
        self.misses += 1
        loaded = await loader()
        if loaded is not None:
            seen = stamp.decode() if isinstance(stamp, bytes) else (stamp or "")
            try:
                await self._set_if_stamp(
                    keys=[k, stamp_key], args=[orjson.dumps(loaded), seen, self._ttl_s]
                )
            except RedisError as exc:
                log.info("cache fill skipped: %s", exc)
        return loaded

    async def invalidate(self, *keys: str) -> None:
        for key in keys:  # one transaction per key: a transaction stays in one cluster slot
            value_key, stamp_key = self._keys(key)
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incr(stamp_key)
                    pipe.expire(stamp_key, 86400)
                    pipe.delete(value_key)
                    await pipe.execute()
            except RedisError as exc:  # the value may outlive its TTL; log loudly
                log.error("cache invalidation failed for %s: %s", key, exc)


def ride_key(ride_id: int) -> str:
    return f"ride:{ride_id}"


def profile_key(user_id: int) -> str:
    return f"user:{user_id}"
