"""The engine's fault handling, in process against the shared PostgreSQL: no pre-ping round trips,
a dead pooled connection replaced or retried instead of failing the request, and every wait
bounded (pool, statement) with 503 `unavailable` in the contract's shape.

The same behaviour against a stopped, restarted and stalled PostgreSQL is in tests/faults/."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from channels.faults import transient
from server.app import create_app
from server.config import Settings
from server.db import create_engine, create_read_sessionmaker, create_sessionmaker
from tests import services
from tests.helpers import assert_error, signup


async def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://kuda.test")


async def test_requests_do_not_ping_the_database_on_checkout(settings: Settings) -> None:
    """Issue 10: every request paid a pool pre-ping (three round trips)."""
    app = create_app(settings)
    async with LifespanManager(app):
        dialect = app.state.engine.sync_engine.dialect
        pings = 0
        original = dialect.do_ping

        def counting_ping(dbapi_connection: Any) -> bool:
            nonlocal pings
            pings += 1
            result: bool = original(dbapi_connection)
            return result

        dialect.do_ping = counting_ping
        async with await _client(app) as client:
            user = await signup(client)
            for _ in range(5):
                r = await client.get("/api/v1/users/me", headers=user.headers)
                assert r.status_code == 200
    assert pings == 0


def _terminate_blocking(url: str, pid: int) -> None:
    """End a backend and wait until it is gone, without letting the caller's event loop run:
    the driver does not see the close until it next uses the connection."""

    async def terminate() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    worker = threading.Thread(target=lambda: asyncio.run(terminate()))
    worker.start()
    worker.join()


@pytest.mark.parametrize("maker", [create_sessionmaker, create_read_sessionmaker])
async def test_a_connection_that_died_in_the_pool_is_retried_once(
    settings_factory: Callable[..., Settings], maker: Callable[..., Any]
) -> None:
    engine = create_engine(settings_factory(db_pool_size=1, db_max_overflow=0))
    sessions = maker(engine)
    try:
        async with sessions() as session:
            first = await session.scalar(text("SELECT pg_backend_pid()"))
        _terminate_blocking(services.database_url("postgres"), first)
        async with sessions() as session:  # the driver finds out on the first statement
            second = await session.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_that_dies_mid_session_is_not_retried(
    settings_factory: Callable[..., Settings],
) -> None:
    """After the first statement the session may have done work: no silent retry, 503."""
    engine = create_engine(settings_factory(db_pool_size=1, db_max_overflow=0))
    try:
        async with create_sessionmaker(engine)() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            _terminate_blocking(services.database_url("postgres"), pid)
            with pytest.raises(DBAPIError) as caught:
                await session.execute(text("SELECT 1"))
        assert caught.value.connection_invalidated and transient(caught.value)
    finally:
        await engine.dispose()


async def test_no_free_connection_is_503_after_the_pool_timeout(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.3)
    app = create_app(settings)
    async with LifespanManager(app), await _client(app) as client:
        user = await signup(client)
        async with app.state.engine.connect() as held:  # the only connection
            await held.execute(text("SELECT 1"))
            r = await client.get("/api/v1/users/me", headers=user.headers)
            error = assert_error(r, 503, "unavailable")
            assert r.headers["Retry-After"] == "1"
            assert error["details"] == {"retry_after_s": 1}
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200


async def test_a_statement_over_the_timeout_is_cancelled_by_the_server(
    settings_factory: Callable[..., Settings],
) -> None:
    engine = create_engine(settings_factory(db_statement_timeout_s=0.2))
    try:
        async with create_sessionmaker(engine)() as session:
            with pytest.raises(DBAPIError) as caught:
                await session.execute(text("SELECT pg_sleep(5)"))
        assert transient(caught.value)  # 57014, answered 503 like any other "not now"
    finally:
        await engine.dispose()


async def test_admin_tasks_have_no_statement_timeout(
    settings_factory: Callable[..., Settings],
) -> None:
    engine = create_engine(settings_factory(db_statement_timeout_s=0.2), serving=False)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW statement_timeout")) == "0"
            await conn.execute(text("SELECT pg_sleep(0.3)"))
    finally:
        await engine.dispose()
