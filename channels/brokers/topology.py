"""Where Redis is: one server, a Redis Cluster, or a primary watched by Sentinel.

One `RedisTopology` builds every Redis client of an instance (the broker's and the app's), so
the mode is chosen in one place. Clients come from redis-py itself (`Redis`, `RedisCluster`,
`Sentinel.master_for`): failover and slot routing are redis-py's, never ours.

URLs are `redis://` or `rediss://` (TLS). In cluster and sentinel modes, several comma-separated
URLs name the seed nodes or the sentinels; credentials, TLS and database come from the first.

Keys that one command, transaction or script touches together must hash to one cluster slot:
build them with `RedisTopology.same_slot()`, which wraps the shared part in a hash tag in
cluster mode (and leaves key names as they were elsewhere, so upgrading a single-server
deployment does not orphan its keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast, get_args
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

RedisMode = Literal["single", "cluster", "sentinel"]
RedisClient: TypeAlias = "Redis | RedisCluster"
MODES: tuple[str, ...] = get_args(RedisMode)
SCHEMES = ("redis", "rediss")


class TopologyError(ValueError):
    """A Redis configuration that cannot work; the message says what to change."""


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel-discovered primary, with a pool that waits for a free connection instead of
    raising (redis-py 8 pools raise at `max_connections` by default)."""


class _SentinelManagedRedis(Redis):
    """The primary's client; closing it closes the connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        sentinel: Sentinel = self.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        for client in sentinel.sentinels:
            await client.aclose()


def same_slot(prefix: str, tag: str, *suffixes: str, tagged: bool = True) -> list[str]:
    """Keys `prefix{tag}suffix`, all in one cluster slot (the hash tag is `{tag}`);
    `prefix` + `tag` + `suffix` when not `tagged`."""
    base = f"{prefix}{{{tag}}}" if tagged else prefix + tag
    return [base + suffix for suffix in suffixes]


@dataclass(frozen=True, slots=True)
class RedisTopology:
    mode: RedisMode
    urls: tuple[str, ...]
    sentinel_service: str = "mymaster"

    @classmethod
    def parse(
        cls, url: str, mode: str = "single", sentinel_service: str = "mymaster"
    ) -> RedisTopology:
        if mode not in MODES:
            raise TopologyError(f"REDIS_MODE must be one of {', '.join(MODES)}, got {mode!r}")
        urls = tuple(part.strip() for part in url.split(",") if part.strip())
        if not urls:
            raise TopologyError("REDIS_URL is empty")
        for each in urls:
            parts = urlsplit(each)
            if parts.scheme not in SCHEMES or not parts.hostname:
                raise TopologyError(f"REDIS_URL entries must be redis:// or rediss:// URLs: {each}")
        if mode == "single" and len(urls) > 1:
            raise TopologyError("several REDIS_URL entries need REDIS_MODE=cluster or sentinel")
        if mode == "cluster" and urlsplit(urls[0]).path.strip("/") not in ("", "0"):
            raise TopologyError("a Redis Cluster has only database 0")
        return cls(cast(RedisMode, mode), urls, sentinel_service)

    def same_slot(self, prefix: str, tag: str, *suffixes: str) -> list[str]:
        """Keys that must share a slot: hash-tagged in cluster mode only."""
        return same_slot(prefix, tag, *suffixes, tagged=self.mode == "cluster")

    @property
    def tls(self) -> bool:
        return urlsplit(self.urls[0]).scheme == "rediss"

    def describe(self) -> str:
        """For logs: the mode and the addresses, never credentials."""
        hosts = ",".join(f"{urlsplit(u).hostname}:{urlsplit(u).port or 6379}" for u in self.urls)
        scheme = "rediss" if self.tls else "redis"
        service = f" service={self.sentinel_service}" if self.mode == "sentinel" else ""
        return f"{self.mode} {scheme}://{hosts}{service}"

    def client(
        self, *, max_connections: int = 100, blocking: bool = False, **kw: Any
    ) -> RedisClient:
        """A client for this topology (`Redis` or `RedisCluster`: both speak the same
        commands). `blocking` pools wait up to 5 s for a free connection instead of raising."""
        if self.mode == "cluster":
            return self._cluster(max_connections, kw)
        if self.mode == "sentinel":
            return self._sentinel(max_connections, blocking, kw)
        if blocking:
            pool = BlockingConnectionPool.from_url(
                self.urls[0], max_connections=max_connections, timeout=5, **kw
            )
            return Redis(connection_pool=pool)
        return Redis.from_url(self.urls[0], max_connections=max_connections, **kw)

    def _cluster(self, max_connections: int, kw: dict[str, Any]) -> RedisCluster:
        seeds = [_address(u) for u in self.urls[1:]]
        # A failover moves slots: retry on the refreshed map, quickly, for a few seconds.
        retry = kw.pop("retry", None) or Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.1), 5)
        return RedisCluster.from_url(
            self.urls[0],
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            max_connections=max_connections,
            retry=retry,
            **kw,
        )

    def _sentinel(self, max_connections: int, blocking: bool, kw: dict[str, Any]) -> Redis:
        options: dict[str, Any] = dict(parse_url(self.urls[0]))
        tls = options.pop("connection_class", None) is SSLConnection
        for key in ("host", "port", "path"):
            options.pop(key, None)
        # Sentinels are reached like the primary (TLS and CA options), without its password.
        sentinel_kwargs = {
            k: v for k, v in options.items() if k.startswith("ssl") and k != "ssl_password"
        }
        if tls:
            sentinel_kwargs["ssl"] = True
            options["ssl"] = True
        for key in ("socket_connect_timeout", "socket_timeout"):
            if key in kw:
                sentinel_kwargs[key] = kw[key]
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [_address(u) for u in self.urls], sentinel_kwargs=sentinel_kwargs, **options, **kw
        )
        pool_kwargs: dict[str, Any] = {"max_connections": max_connections}
        pool_class: type[SentinelConnectionPool] = SentinelConnectionPool
        if blocking:
            pool_class, pool_kwargs["timeout"] = _SentinelBlockingPool, 5
        client: Redis = sentinel.master_for(
            self.sentinel_service,
            redis_class=_SentinelManagedRedis,
            connection_pool_class=pool_class,
            **pool_kwargs,
        )
        return client


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return parts.hostname, parts.port or 6379
