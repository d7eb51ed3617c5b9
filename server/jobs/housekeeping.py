"""Housekeeping: rows past their usefulness, deleted in bounded batches.

Each task deletes at most `batch` rows per transaction, picked `FOR UPDATE SKIP LOCKED` (two
instances delete different rows; a row a request holds is left for later), and only rows whose
absence nobody can notice:
- `idempotency_keys` older than their 24 hours (a retry after that is a new request anyway);
- `refresh_tokens` expired for longer than an access token lives (the token is refused as
  expired before its row is read, and no access token of its family can still be live);
- `session_revocations` an hour past `expires_at` (no token they refuse is still valid);
- `login_attempts` whose window ended an hour ago (the next attempt opens a new window);
- read `notifications` older than NOTIFICATION_RETENTION_S (off by default).
WebSocket tickets live in Redis (or memory) with a TTL and are deleted when used: nothing here.
Events past EVENT_RETENTION_S are trimmed by the outbox relay (`channels.relay`), which records
the trimmed seq in the same transaction so `since` older than it answers `recovered: false`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.idempotency import KEEP as IDEMPOTENCY_KEEP

GRACE = timedelta(hours=1)


def _delete(table: str, key: str, where: str) -> TextClause:
    """The batch delete of one table (names from the constants below, never from input)."""
    return text(
        f"""
        WITH d AS (
            DELETE FROM {table} WHERE ({key}) IN (
                SELECT {key} FROM {table} WHERE {where} LIMIT :batch FOR UPDATE SKIP LOCKED
            ) RETURNING 1
        )
        SELECT count(*) FROM d
        """  # noqa: S608
    )


IDEMPOTENCY_KEYS = _delete("idempotency_keys", "user_id, key", "created_at < :cutoff")
REFRESH_TOKENS = _delete("refresh_tokens", "jti", "expires_at < :cutoff")
SESSION_REVOCATIONS = _delete("session_revocations", "id", "expires_at < :cutoff")
LOGIN_ATTEMPTS = _delete("login_attempts", "bucket", "window_ends < :cutoff")
READ_NOTIFICATIONS = _delete("notifications", "id", "read_at IS NOT NULL AND read_at < :cutoff")


async def delete_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    statement: TextClause,
    cutoff: datetime,
    batch: int,
) -> int:
    """Delete up to `batch` rows older than `cutoff` in one transaction; returns how many."""
    async with sessionmaker() as session, session.begin():
        result = await session.execute(statement, {"cutoff": cutoff, "batch": batch})
        return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class Task:
    """Delete the rows of `statement` older than `now - keep`."""

    name: str
    statement: TextClause
    keep: timedelta


def tasks(access_token_ttl_s: int, notification_retention_s: int) -> list[Task]:
    """The housekeeping tasks (no notification task while the retention is 0)."""
    found = [
        Task("housekeeping.idempotency_keys", IDEMPOTENCY_KEYS, IDEMPOTENCY_KEEP),
        Task(
            "housekeeping.refresh_tokens",
            REFRESH_TOKENS,
            timedelta(seconds=access_token_ttl_s) + GRACE,
        ),
        Task("housekeeping.session_revocations", SESSION_REVOCATIONS, GRACE),
        Task("housekeeping.login_attempts", LOGIN_ATTEMPTS, GRACE),
    ]
    if notification_retention_s > 0:
        keep = timedelta(seconds=notification_retention_s)
        found.append(Task("housekeeping.notifications", READ_NOTIFICATIONS, keep))
    return found
