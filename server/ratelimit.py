"""Fixed-window counters for rate limits: Redis-backed when configured, in-process otherwise."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from redis.exceptions import RedisError

from channels.brokers import RedisClient

log = logging.getLogger("kuda.ratelimit")


class Counter(Protocol):
    async def incr(self, key: str, window_s: int) -> tuple[int, int]:
        """Count one hit; returns (hits in the current window, seconds until it resets)."""

    async def peek(self, key: str) -> tuple[int, int]:
        """(hits, seconds left) without counting."""

    async def reset(self, key: str) -> None: ...


class MemoryCounter:
    """Single-process counters; expired windows are dropped lazily."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}

    def _current(self, key: str) -> tuple[int, float]:
        now = time.monotonic()
        hits, ends = self._windows.get(key, (0, 0.0))
        if ends <= now:
            return 0, 0.0
        return hits, ends

    async def incr(self, key: str, window_s: int) -> tuple[int, int]:
        hits, ends = self._current(key)
        if not ends:
            ends = time.monotonic() + window_s
            if len(self._windows) > 100_000:
                self._sweep()
        self._windows[key] = (hits + 1, ends)
        return hits + 1, max(1, round(ends - time.monotonic()))

    async def peek(self, key: str) -> tuple[int, int]:
        hits, ends = self._current(key)
        return hits, max(0, round(ends - time.monotonic()))

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}


class RedisCounter:
    """Counters shared by every instance. Fails open (logs) when Redis is unreachable."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "rl:"

    async def incr(self, key: str, window_s: int) -> tuple[int, int]:
        k = self._prefix + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(k)
                pipe.expire(k, window_s, nx=True)
                pipe.ttl(k)
                hits, _, ttl = await pipe.execute()
        except RedisError as exc:
            log.warning("rate limit counter unavailable: %s", exc)
            return 0, 0
        return int(hits), max(1, int(ttl))

    async def peek(self, key: str) -> tuple[int, int]:
        k = self._prefix + key
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(k)
                pipe.ttl(k)
                hits, ttl = await pipe.execute()
        except RedisError as exc:
            log.warning("rate limit counter unavailable: %s", exc)
            return 0, 0
        return int(hits or 0), max(0, int(ttl))

    async def reset(self, key: str) -> None:
        try:
            await self._redis.delete(self._prefix + key)
        except RedisError as exc:
            log.warning("rate limit counter unavailable: %s", exc)
