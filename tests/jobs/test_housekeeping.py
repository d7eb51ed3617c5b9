"""Housekeeping deletes only what nobody can miss, in bounded batches, at an injected `now`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.jobs.housekeeping import Task, delete_batch, tasks
from tests.helpers import Account

NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)


async def _run(maker: async_sessionmaker[AsyncSession], task: Task, batch: int = 100) -> int:
    return await delete_batch(maker, task.statement, NOW - task.keep, batch)


def _named(name: str, *, notifications_s: int = 0) -> Task:
    return next(t for t in tasks(900, notifications_s) if t.name == f"housekeeping.{name}")


async def test_expired_idempotency_keys_go_in_bounded_batches(
    maker: async_sessionmaker[AsyncSession], pg: asyncpg.Connection, driver: Account
) -> None:
    for i, age in enumerate([25, 26, 30, 48, 49, 23, 1]):
        await pg.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) "
            "VALUES ($1, $2, 'h', $3)",
            driver.id, f"k{i}", NOW - age * HOUR,
        )  # fmt: skip
    task = _named("idempotency_keys")
    assert [await _run(maker, task, 2) for _ in range(4)] == [2, 2, 1, 0]
    left = await pg.fetch("SELECT key FROM idempotency_keys ORDER BY key")
    assert [r["key"] for r in left] == ["k5", "k6"]  # inside their 24 hours


async def test_expired_auth_rows_go_and_live_ones_stay(
    maker: async_sessionmaker[AsyncSession], pg: asyncpg.Connection, driver: Account
) -> None:
    before = await pg.fetchval("SELECT count(*) FROM refresh_tokens")  # the login's token
    for expires in (NOW - 3 * HOUR, NOW - 10 * HOUR, NOW - 10 * timedelta(minutes=1)):
        await pg.execute(
            "INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at) "
            "VALUES ($1, $1, $2, $3)",
            uuid.uuid4(), driver.id, expires,
        )  # fmt: skip
    for expires in (NOW - 2 * HOUR, NOW + HOUR):
        await pg.execute(
            "INSERT INTO session_revocations (session_key, user_id, reason, expires_at) "
            "VALUES ('s', $1, 'logout', $2)",
            driver.id, expires,
        )  # fmt: skip
    for bucket, ends in (("old", NOW - 2 * HOUR), ("live", NOW - timedelta(minutes=5))):
        await pg.execute(
            "INSERT INTO login_attempts (bucket, used, window_ends) VALUES ($1, 1, $2)",
            bucket, ends,
        )  # fmt: skip

    assert await _run(maker, _named("refresh_tokens")) == 2  # expired over 15 min + 1 h ago
    assert await pg.fetchval("SELECT count(*) FROM refresh_tokens") == before + 1
    assert await _run(maker, _named("session_revocations")) == 1
    assert await _run(maker, _named("login_attempts")) == 1
    left = await pg.fetch("SELECT bucket FROM login_attempts WHERE bucket IN ('old', 'live')")
    assert [r["bucket"] for r in left] == ["live"]


async def test_read_notifications_go_only_when_a_retention_is_set(
    maker: async_sessionmaker[AsyncSession], pg: asyncpg.Connection, driver: Account
) -> None:
    assert all(t.name != "housekeeping.notifications" for t in tasks(900, 0))  # off by default
    rows = [("old-read", NOW - 40 * 24 * HOUR), ("old-unread", None), ("new-read", NOW - HOUR)]
    for kind, read_at in rows:
        await pg.execute(
            "INSERT INTO notifications (user_id, kind, data, read_at, created_at) "
            "VALUES ($1, $2, '{}', $3, $4)",
            driver.id, kind, read_at, NOW - 50 * 24 * HOUR,
        )  # fmt: skip
    task = _named("notifications", notifications_s=30 * 24 * 3600)
    assert await _run(maker, task) == 1
    kinds = await pg.fetch("SELECT kind FROM notifications ORDER BY kind")
    assert [r["kind"] for r in kinds] == ["new-read", "old-unread"]
