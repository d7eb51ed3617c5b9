"""Fixed-window counters for rate limits: shared through Redis when configured, in-process
otherwise, and in-process too while Redis cannot be reached (each instance then counts on its
own: the limits stay on, per instance, instead of switching off)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from redis.exceptions import RedisError

from channels.brokers import RedisClient

log = logging.getLogger("kuda.ratelimit")

_INCR = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {hits, ttl}
"""


class Counter(Protocol):
    async def incr(self, key: str, window_s: int) -> tuple[int, int]:
        """Count one hit; returns (hits in the current window, seconds until it resets)."""


class MemoryCounter:
    """Single-process counters; expired windows are dropped lazily."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}

    async def incr(self, key: str, window_s: int) -> tuple[int, int]:
        now = time.monotonic()
        hits, ends = self._windows.get(key, (0, 0.0))
        if ends <= now:
            hits, ends = 0, now + window_s
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        self._windows[key] = (hits + 1, ends)
        return hits + 1, max(1, round(ends - now))


class RedisCounter:
    """Counters shared by every instance: one atomic script per hit (INCR, and EXPIRE on the
    window's first hit). While Redis is unreachable or slow (the client's socket timeout), hits
    are counted in-process instead: never a silent fail-open."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix + "rl:"
        self._script = redis.register_script(_INCR)
        self._fallback = MemoryCounter()
        self._degraded = False

    async def incr(self, key: str, window_s: int) -> tuple[int, int]:
        try:
            hits, ttl = await self._script(keys=[self._prefix + key], args=[window_s])
        except (RedisError, OSError) as exc:
            if not self._degraded:
                log.warning("shared rate limit counters unavailable (%s); counting locally", exc)
                self._degraded = True
            return await self._fallback.incr(key, window_s)
        if self._degraded:
            log.info("shared rate limit counters available again")
            self._degraded = False
        return int(hits), max(1, int(ttl))


class WriteLimit:
    """`WRITE_RATE_PER_USER` creating writes (rides, bookings, messages, reviews, alerts; REST
    or socket `send`) per user per minute, across instances; 0 turns it off."""

    WINDOW_S = 60

    def __init__(self, counter: Counter, per_minute: int) -> None:
        self._counter = counter
        self.per_minute = per_minute

    async def hit(self, user_id: int) -> int | None:
        """Count one write; None if allowed, else the seconds until the window resets."""
        if self.per_minute <= 0:
            return None
        hits, ttl = await self._counter.incr(f"w:{user_id}", self.WINDOW_S)
        return ttl if hits > self.per_minute else None
