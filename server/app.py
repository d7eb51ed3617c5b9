"""The application factory. The lifespan owns every resource: engine, Redis, services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Receive, Scope, Send

from channels import Realtime
from channels.brokers import RedisClient
from server import channel_policy, docs_ui, health, heap, logredact, monitoring, web
from server.admin.router import router as admin_router
from server.alerts.router import router as alerts_router
from server.auth.passwords import Passwords
from server.auth.router import router as auth_router
from server.auth.service import AuthService
from server.auth.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from server.auth.tokens import TokenCodec
from server.bookings.router import router as bookings_router
from server.cache import Cache, NoCache, RedisCache
from server.channels_api import router as channels_router
from server.chat.router import router as chat_router
from server.config import Settings
from server.db import create_engine, create_read_sessionmaker, create_sessionmaker
from server.drain import Drain
from server.errors import install_error_handlers
from server.http_metrics import HttpCollector, HttpTallies
from server.jobs import create_runner
from server.middleware import BodyLimitMiddleware, RequestIdMiddleware
from server.notifications.router import router as notifications_router
from server.openapi_errors import document_errors
from server.ratelimit import Counter, MemoryCounter, RedisCounter, WriteLimit
from server.realtime import create_realtime
from server.replica import ReadReplica, ReplicaCollector
from server.reviews.router import router as reviews_router
from server.rides.router import mine_router as my_rides_router
from server.rides.router import router as rides_router
from server.stats.feed import create_feed as create_stats_feed
from server.stats.router import router as stats_router
from server.users.router import router as users_router

log = logging.getLogger("kuda")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. With no argument, settings come from the environment (uvicorn --factory)."""
    settings = settings or Settings()
    settings.signing_key()  # refuse to build without a usable key
    settings.accepted_keys()
    logredact.install()
    app = FastAPI(
        title="Kuda",
        version="1",
        summary="Realtime carpooling backend",
        lifespan=_lifespan,
        docs_url=None,  # served by server.docs_ui from local assets
        redoc_url=None,
        # FastAPI's native OpenTelemetry wraps every request and socket; Kuda exports
        # Prometheus metrics instead (measured: docs/decisions.md D11). OTEL_TRACING=true
        # turns its request spans on.
        telemetry=monitoring.telemetry(settings),
    )
    app.state.settings = settings
    app.state.http_tallies = tallies = HttpTallies()
    install_error_handlers(app)
    document_errors(app)  # the error shape in the OpenAPI schema
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.allowed_origins:  # browsers on these origins may call the REST API
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-Match"],
            expose_headers=["ETag", "Retry-After", "X-Request-ID", "Server-Timing", "Kuda-Seq"],
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware, tallies=tallies)
    app.include_router(health.router)
    app.include_router(monitoring.router)
    app.include_router(auth_router)
    app.include_router(my_rides_router)  # /users/me/rides, before /users/{id}
    app.include_router(users_router)
    app.include_router(rides_router)
    app.include_router(bookings_router)
    app.include_router(chat_router)
    app.include_router(reviews_router)
    app.include_router(notifications_router)
    app.include_router(alerts_router)
    app.include_router(admin_router)
    app.include_router(stats_router)
    app.include_router(channels_router)
    app.router.add_websocket_route("/ws", _websocket)
    docs_ui.install(app)
    web.install(app)
    return app


class KudaASGI:
    """What `kuda serve` serves: WebSocket upgrades on `/ws` go straight to the gateway, so a
    socket does not hold the HTTP middleware stack's frames for its whole life (about 4 KiB
    each, measured with tracemalloc); everything else goes to the FastAPI app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            realtime: Realtime = self.app.state.realtime
            await realtime.gateway.endpoint(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)


def create_asgi(settings: Settings | None = None) -> KudaASGI:
    """The uvicorn factory (`server.app:create_asgi`)."""
    return KudaASGI(create_app(settings))


async def _websocket(websocket: WebSocket) -> None:
    """`/ws`: the realtime gateway (PROTOCOL.md sections 2-5)."""
    realtime: Realtime = websocket.app.state.realtime
    await realtime.gateway.endpoint(websocket)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    topology = settings.redis_topology
    redis = create_redis(settings)
    if topology is not None:
        log.info("Redis: %s", topology.describe())
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    pgbouncer = settings.database_pgbouncer
    app.state.read_sessionmaker = create_read_sessionmaker(engine, pgbouncer=pgbouncer)
    engines = {"primary": engine}
    replica_maker = None
    if settings.async_read_url is not None:
        engines["replica"] = replica = create_engine(settings, url=settings.async_read_url)
        app.state.replica_engine = replica
        replica_maker = create_read_sessionmaker(replica, pgbouncer=pgbouncer)
        log.info("lag-tolerant reads (search, replay) on DATABASE_READ_URL")
    app.state.reads = reads = ReadReplica(
        app.state.read_sessionmaker, replica_maker, settings.db_replica_retry_s
    )
    app.state.redis = redis
    app.state.auth = auth = _auth_service(
        settings, redis, app.state.sessionmaker, app.state.read_sessionmaker
    )
    app.state.realtime = realtime = create_realtime(
        settings, auth, app.state.sessionmaker, app.state.read_sessionmaker
    )
    app.state.write_limit = write_limit = WriteLimit(auth.counter, settings.write_rate_per_user)
    channel_policy.register(
        realtime.registry, app.state.sessionmaker, app.state.read_sessionmaker, write_limit
    )
    app.state.cache = cache = _cache(settings, redis)
    counts = (lambda: (cache.hits, cache.misses)) if isinstance(cache, RedisCache) else None
    registry = realtime.metrics.registry
    registry.register(HttpCollector(app.state.http_tallies, engines, counts))
    registry.register(ReplicaCollector(reads))
    listener = (
        monitoring.MetricsListener(settings.metrics_port, registry)
        if settings.metrics_port is not None
        else None
    )
    await realtime.start()
    app.state.stats_feed = stats_feed = create_stats_feed(realtime, app.state.read_sessionmaker)
    await stats_feed.start()
    await auth.sessions.start()
    app.state.drain = drain = Drain(settings.drain_s, realtime.gateway, settings.drain_min_rate)
    if drain.install():
        log.info("SIGTERM drains: sockets closed with 1012 over %.0f s", settings.drain_s)
    jobs = create_runner(
        settings, app.state.sessionmaker, cache, registry, paused=lambda: drain.draining
    )
    if settings.jobs_enabled:
        jobs.start()
    frozen = heap.freeze_startup_heap()
    if frozen:
        log.info("startup heap frozen out of the garbage collector: %d objects", frozen)
    try:
        yield
    finally:
        await jobs.stop()
        await drain.stop()
        await auth.sessions.stop()
        if listener is not None:
            listener.stop()
        await stats_feed.stop()
        await realtime.stop()
        if isinstance(redis, Redis):  # built on an explicit (blocking) pool: close it too
            await redis.aclose(close_connection_pool=True)
        elif redis is not None:
            await redis.aclose()
        for each in engines.values():
            await each.dispose()


def create_redis(settings: Settings) -> RedisClient | None:
    """The app's Redis client (limits, tickets, cache). A blocking pool of a fixed size (single
    server and Sentinel): a burst waits for a free connection instead of failing at once ("Too
    many connections"), and every command gives up after REDIS_SOCKET_TIMEOUT_S, so a slow
    Redis sends each caller to its fallback instead of stalling it."""
    topology = settings.redis_topology
    if topology is None:
        return None
    return topology.client(
        max_connections=settings.redis_max_connections,
        blocking=True,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_socket_timeout_s,
    )


def _auth_service(
    settings: Settings,
    redis: RedisClient | None,
    sessionmaker: async_sessionmaker[AsyncSession],
    autocommit: async_sessionmaker[AsyncSession],
) -> AuthService:
    counter: Counter
    tickets: TicketStore
    if redis is not None:
        counter = RedisCounter(redis, settings.redis_prefix)
        tickets = RedisTicketStore(redis, settings.redis_prefix)
    else:
        counter, tickets = MemoryCounter(), MemoryTicketStore()
    return AuthService(
        settings,
        TokenCodec(settings),
        Passwords(settings),
        counter,
        tickets,
        sessionmaker,
        autocommit,
    )


def _cache(settings: Settings, redis: RedisClient | None) -> Cache:
    if redis is None:
        return NoCache()
    return RedisCache(redis, settings.redis_prefix, topology=settings.redis_topology)
