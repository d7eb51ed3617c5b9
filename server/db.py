"""Engine and session factory. Sessions are short: one per request or per socket command.

Faults (docs/reliability.md): every wait on PostgreSQL is bounded. A connection attempt gives up
after `DB_CONNECT_TIMEOUT_S`, a request waiting for a pooled connection after
`DB_POOL_TIMEOUT_S`, a statement after `DB_STATEMENT_TIMEOUT_S` (cancelled by the server) and,
when the server does not answer at all (stalled), after `DB_COMMAND_TIMEOUT_S` on our side.
There is no pre-ping on checkout (it cost three round trips per request): a connection the server
closed (restart, crash, terminated backend) is noticed for free at checkout (the driver saw the
socket close) and replaced; one that dies in use invalidates the pool, and the first statement
of a session, which has done nothing yet, is retried once on a fresh connection. What still
fails is answered 503 `unavailable` (server.errors).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from starlette.requests import HTTPConnection

from channels.faults import broken_connection, transient
from server.config import Settings

log = logging.getLogger("kuda.db")


def create_engine(
    settings: Settings, *, serving: bool = True, url: str | None = None
) -> AsyncEngine:
    """The app's engine. `serving=False` (admin tasks such as seeding) lifts the statement and
    command timeouts, which are sized for requests, not for bulk work. `url`: another server
    than the primary (the read replica, DATABASE_READ_URL), with the same settings."""
    server_settings = {"application_name": "kuda"}
    connect_args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout_s,
        "server_settings": server_settings,
    }
    if serving:
        connect_args["command_timeout"] = settings.db_command_timeout_s
    if settings.database_pgbouncer:
        # PgBouncer in transaction mode (docs/decisions.md D39): a server connection is ours only
        # inside a transaction, so no statement may outlive one. No statement cache (asyncpg's or
        # SQLAlchemy's), a name of its own for each prepared statement (two clients' statement
        # 1 would collide on one server connection), and no startup parameters besides
        # application_name (PgBouncer refuses them): statement_timeout comes from the role
        # (ALTER ROLE ... SET statement_timeout) or PgBouncer's connect_query (docs/scaling.md).
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    else:
        # asyncpg prepares every statement; PostgreSQL's generic plans ignore the
        # actual values, which picks poor plans for search (docs/decisions.md D15).
        server_settings["plan_cache_mode"] = "force_custom_plan"
        if serving:
            server_settings["statement_timeout"] = str(int(settings.db_statement_timeout_s * 1000))
    engine = create_async_engine(
        url or settings.async_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=False,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine.pool, "checkout", _closed_on_checkout)
    event.listen(engine.sync_engine, "handle_error", _broken_connections_are_disconnects)
    return engine


def _closed_on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection whose socket the server closed is replaced before use (no round
    trip: the driver already saw the close)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("pooled connection was closed by the server")


def _broken_connections_are_disconnects(context: ExceptionContext) -> None:
    """A connection that did not answer within the command timeout (stalled server, network
    gone), or that the server is closing (its FATAL arrived before the socket's close), is in no
    state to be used again: it is dropped, and the pool with it, instead of being handed to the
    next request (and the session's first statement is retried on a fresh one)."""
    if broken_connection(context.original_exception):
        context.is_disconnect = True


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=RetryingSession)


def _unique_statement_name() -> str:
    return f"__kuda_{uuid.uuid4().hex}__"


def create_read_sessionmaker(
    engine: AsyncEngine, *, pgbouncer: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions for read-only requests: autocommit, so no BEGIN/ROLLBACK round trips. Behind
    PgBouncer (transaction mode) a statement outside a transaction may be prepared on one server
    connection and executed on another: there each statement runs in a transaction of its own
    instead, committed as soon as it returns (the same outcome, two more round trips)."""
    if pgbouncer:
        return async_sessionmaker(
            engine, expire_on_commit=False, sync_session_class=StatementCommitSession
        )
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        expire_on_commit=False,
        sync_session_class=RetryingSession,
    )


class RetryingSession(Session):
    """A session whose first statement is retried once when its connection turns out dead.

    Safe because nothing has happened in the session yet: no transaction on the server (a
    transaction dies with its connection), nothing loaded that a rollback would expire, nothing
    pending that autoflush would have written. Later statements are not retried."""


@event.listens_for(RetryingSession, "do_orm_execute")
def _retry_first_statement(state: ORMExecuteState) -> Any:
    session = state.session
    if not _untouched(session):
        return None
    try:
        return state.invoke_statement()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.info("connection lost before the session's first statement; retrying once")
        session.rollback()
        return state.invoke_statement()


def _untouched(session: Session) -> bool:
    return not (session.in_transaction() or session.identity_map or session.new or session.deleted)


class StatementCommitSession(RetryingSession):
    """Autocommit made of transactions (for PgBouncer's transaction mode): every statement is
    committed as soon as it has run, its rows kept in memory first."""


@event.listens_for(StatementCommitSession, "do_orm_execute")
def _commit_each_statement(state: ORMExecuteState) -> Any:
    result = state.invoke_statement()
    if not getattr(result, "returns_rows", True):  # DML without RETURNING: nothing to keep
        state.session.commit()
        return result
    frozen = result.freeze()
    state.session.commit()
    return frozen()


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


@asynccontextmanager
async def open_session(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that is closed (uncommitted work rolled back) on the way out. If the connection
    died meanwhile the close cannot roll back, and need not (the server dropped the transaction
    with the connection): that is logged, not raised, so a request whose answer is already on
    its way (dependencies close after the response starts) is not turned into an error."""
    session = maker()
    try:
        yield session
    finally:
        try:
            await session.close()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("session closed on a lost connection (%s)", type(exc).__name__)


async def session_dependency(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A request's session. Services commit; whatever is left uncommitted is rolled back."""
    async with open_session(conn.app.state.sessionmaker) as session:
        yield session


async def read_session_dependency(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A read-only request's session: each statement runs on its own (autocommit)."""
    async with open_session(conn.app.state.read_sessionmaker) as session:
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
