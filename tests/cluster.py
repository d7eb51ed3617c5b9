"""Several real instances on one PostgreSQL and one Redis, for tests that cross processes.

`process()` starts a `kuda serve` process; `in_process()` serves the same app with uvicorn in
the test's loop (so the test can append events through it with the app's own sessions)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.live import LiveServer
from tests.procs import Server, kuda_env
from tests.services import JWT_SECRET


class Cluster:
    def __init__(
        self,
        db_url: str,
        redis_url: str,
        tmp: Path,
        factory: Callable[..., Any],
        redis_mode: str = "single",
        sentinel_service: str = "mymaster",
    ) -> None:
        self.db_url, self.redis_url, self.tmp = db_url, redis_url, tmp
        self.redis_mode, self.sentinel_service = redis_mode, sentinel_service
        self.prefix = f"kuda-mi-{uuid.uuid4().hex[:8]}:"
        self._factory = factory
        self.processes: list[Server] = []

    def env(self, **extra: str) -> dict[str, str]:
        """The processes' environment; `extra` (e.g. INSTANCE_TTL_S="2") overrides it."""
        return kuda_env(
            DATABASE_URL=self.db_url,
            REDIS_URL=self.redis_url,
            REDIS_MODE=self.redis_mode,
            REDIS_SENTINEL_SERVICE=self.sentinel_service,
            REDIS_PREFIX=self.prefix,
            JWT_SECRET=JWT_SECRET,
            PASSWORD_HASH_TIME_COST="1",
            PASSWORD_HASH_MEMORY_KIB="1024",
            RELAY_INTERVAL_S="0.5",
            RESYNC_INTERVAL_S="2",
            **extra,
        )

    async def process(self, name: str = "a", port: int | None = None, **extra: str) -> Server:
        """`extra` (e.g. INSTANCE_TTL_S="2") overrides the environment; `port` reuses one."""
        log_path = self.tmp / f"{name}-{len(self.processes)}.log"
        server = Server(self.env(**extra), log_path, port=port)
        self.processes.append(server)
        await asyncio.to_thread(server.wait_ready)
        return server

    async def in_process(self, **overrides: Any) -> LiveServer:
        """The app in the test's loop; `overrides` are Settings fields (instance_ttl_s=2)."""
        settings: dict[str, Any] = {
            "redis_url": self.redis_url,
            "redis_prefix": self.prefix,
            "relay_interval_s": 0.5,
            "resync_interval_s": 2,
            "redis_mode": self.redis_mode,
            "redis_sentinel_service": self.sentinel_service,
        }
        server: LiveServer = await self._factory(**{**settings, **overrides})
        return server

    async def stop(self) -> None:
        for server in self.processes:
            await asyncio.to_thread(server.stop)


async def forget_prefix(redis_url: str, prefix: str) -> None:
    """Remove what a cluster left on a Redis server that outlives the test (the shared one)."""
    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    except (OSError, RedisError):
        pass  # a test-owned Redis that was stopped: nothing left behind
    finally:
        await client.aclose()
