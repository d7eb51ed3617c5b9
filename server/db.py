"""Engine and session factory. Sessions are short: one per request or per socket command."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from starlette.requests import HTTPConnection

from server.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.async_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "application_name": "kuda",
                # asyncpg prepares every statement; PostgreSQL's generic plans ignore the
                # actual values, which picks poor plans for search (docs/decisions.md D15).
                "plan_cache_mode": "force_custom_plan",
            }
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for read-only requests: autocommit, so no BEGIN/ROLLBACK round trips."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def session_dependency(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A request's session. Services commit; whatever is left uncommitted is rolled back."""
    maker: async_sessionmaker[AsyncSession] = conn.app.state.sessionmaker
    async with maker() as session:
        yield session


async def read_session_dependency(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A read-only request's session: each statement runs on its own (autocommit)."""
    maker: async_sessionmaker[AsyncSession] = conn.app.state.read_sessionmaker
    async with maker() as session:
        yield session


AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT = "kuda.after_commit"


def on_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` after `commit(session)` succeeds (e.g. cache invalidation)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


async def commit(session: AsyncSession) -> None:
    """Commit, then await the after-commit callbacks, so their effects (cache invalidation)
    are done before the response is sent. Callbacks are dropped if the commit fails."""
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    await session.commit()
    for callback in callbacks:
        await callback()
