"""Snapshot fencing for REST reads of objects that have a durable channel.

A read answers with `Kuda-Seq: <n>`: the head seq of the object's channel, read in the same
REPEATABLE READ snapshot as the data. Every change that the data shows committed with its
event at a seq <= n, and every change it does not show commits an event at a seq > n, so a client
that renders the response and subscribes with `since = n` neither misses nor repeats an event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from channels import events

log = logging.getLogger("kuda.snapshot")

SEQ_HEADER = "Kuda-Seq"

_BEGIN = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


async def _snapshot_session(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A session of its own (never shared with other dependencies, so its first statement
    starts its transaction); rolled back when the request ends. If its connection broke during
    the request (PostgreSQL restarted, a statement timed out mid-flight), the rollback cannot
    run: the connection is discarded instead, and the request's own outcome (503) stands."""
    maker: async_sessionmaker[AsyncSession] = conn.app.state.sessionmaker
    session = maker()
    try:
        yield session
    finally:
        try:
            await session.close()
        except (DBAPIError, OSError, TimeoutError):
            log.info("snapshot session's connection broke; discarding it")
            await session.invalidate()


SnapshotSessionDep = Annotated[AsyncSession, Depends(_snapshot_session)]


async def begin(session: AsyncSession) -> None:
    """Make the session's transaction one read-only snapshot; call before any other statement."""
    await session.execute(_BEGIN)


async def head(session: AsyncSession, channel: str) -> int:
    """The channel's last seq (0 when it has none) in the session's snapshot."""
    return (await events.state(session, channel)).head


def fence(response: Response, seq: int) -> None:
    response.headers[SEQ_HEADER] = str(seq)
