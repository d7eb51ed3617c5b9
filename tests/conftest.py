"""Fixtures: one migrated database per test run, tables emptied after each test, per-test Redis
prefixes, and an app served in-process through its real lifespan."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis

from server import migrate
from server.app import create_app
from server.config import Settings
from tests import services
from tests.cluster import Cluster, forget_prefix
from tests.live import LiveServer
from tests.redis_server import RedisClusterServers, RedisSentinelServers, RedisServer

JWT_SECRET = services.JWT_SECRET


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    try:
        name, url = await services.create_database()
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at TEST_DATABASE_URL={services.ADMIN_URL}: {exc}. "
            "Start it (see README) or run .ci/run.",
            returncode=3,
        )
    await asyncio.to_thread(migrate.upgrade, url)
    yield url
    await services.drop_database(name)


@pytest.fixture(scope="session")
async def db_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def db(database_url: str, db_conn: asyncpg.Connection) -> AsyncIterator[str]:
    """The migrated test database; every table is emptied after the test (works across
    processes, unlike an outer transaction with savepoints)."""
    yield database_url
    await services.empty_tables(db_conn)


@pytest.fixture(scope="session")
async def redis_available() -> bool:
    client = Redis.from_url(services.REDIS_URL)
    try:
        await client.ping()
    except OSError:
        return False
    finally:
        await client.aclose()
    return True


@pytest.fixture
def redis_prefix() -> str:
    return f"kuda-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def redis(redis_available: bool, redis_prefix: str) -> AsyncIterator[Redis]:
    if not redis_available:
        pytest.fail(f"Redis is not reachable at TEST_REDIS_URL={services.REDIS_URL}")
    client = Redis.from_url(services.REDIS_URL)
    yield client
    keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": None,
        "jwt_secret": JWT_SECRET,
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "data_dir": "/nonexistent-kuda-test",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings_factory(db: str) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(**{"database_url": db, **overrides})


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kuda.test") as c:
        yield c


@pytest.fixture
async def live_factory(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    servers: list[LiveServer] = []

    async def start(**overrides: Any) -> LiveServer:
        server = await LiveServer(settings_factory(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A test-owned Redis Cluster: 3 primaries, each with a replica (fault tests kill nodes and
    start them again as replicas)."""
    servers = RedisClusterServers(shards=3, replicas=1).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelServers]:
    """A test-owned primary and replica watched by three sentinels."""
    servers = RedisSentinelServers().start()
    yield servers
    servers.stop()


@pytest.fixture
async def cluster_factory(
    db: str, tmp_path: Path, live_factory: Callable[..., Any]
) -> AsyncIterator[Callable[..., Cluster]]:
    """`make(redis_url, redis_mode="single", sentinel_service=...)`: instances on one Redis
    topology (test-owned clusters and sentinels are thrown away with their keys)."""
    clusters: list[Cluster] = []

    def make(redis_url: str, redis_mode: str = "single", **kw: str) -> Cluster:
        cluster = Cluster(db, redis_url, tmp_path, live_factory, redis_mode, **kw)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        await cluster.stop()
        if cluster.redis_mode == "single":
            await forget_prefix(cluster.redis_url, cluster.prefix)


@pytest.fixture
async def live(live_factory: Callable[..., Any]) -> LiveServer:
    """The app served by a real uvicorn in the test's loop (for WebSocket tests)."""
    server: LiveServer = await live_factory()
    return server


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.http) as client:
        yield client
