"""Password checks per bucket and window, reserved atomically in PostgreSQL BEFORE verifying.

`reserve` is one statement: it takes a slot in the bucket's current window only while fewer
than the limit are taken, however many requests arrive at once on however many instances; a
request that gets no slot is refused (429) without its password being checked. A right
password gives its slot back, so the slots count wrong passwords plus checks in flight: at most
`limit` wrong passwords are ever checked per bucket and window (docs/decisions.md D27).

PostgreSQL rather than Redis: the limit must hold when Redis is slow or down, and this costs one
short statement next to an Argon2 verification that takes tens of milliseconds of CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.errors import RateLimited

_RESERVE = text(
    """
    WITH r AS (
        INSERT INTO login_attempts AS a (bucket, used, window_ends)
        VALUES (:bucket, 1, now() + make_interval(secs => :window_s))
        ON CONFLICT (bucket) DO UPDATE SET
            used = CASE WHEN a.window_ends <= now() THEN 1 ELSE a.used + 1 END,
            window_ends = CASE WHEN a.window_ends <= now() THEN EXCLUDED.window_ends
                               ELSE a.window_ends END
        WHERE a.window_ends <= now() OR a.used < :limit
        RETURNING window_ends
    )
    SELECT (SELECT window_ends FROM r) AS reserved,
           (SELECT ceil(extract(epoch FROM window_ends - now()))::int
              FROM login_attempts WHERE bucket = :bucket) AS retry_after_s
    """
)

_RELEASE = text(
    "UPDATE login_attempts SET used = used - 1 "
    "WHERE bucket = :bucket AND window_ends = :window_ends AND used > 0"
)

_FORGET = text("DELETE FROM login_attempts WHERE bucket = :bucket")


@dataclass(frozen=True, slots=True)
class Reservation:
    bucket: str
    window_ends: datetime | None  # None: the limit is off


class LoginAttempts:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], limit: int, window_s: int
    ) -> None:
        """`sessionmaker` must make autocommit sessions: each statement stands alone."""
        self._sessionmaker = sessionmaker
        self.limit = limit
        self.window_s = window_s

    async def reserve(self, bucket: str, message: str) -> Reservation:
        """A slot to check one password in `bucket`, or RateLimited (429) with `message`."""
        if self.limit <= 0:
            return Reservation(bucket, None)
        params = {"bucket": bucket, "window_s": self.window_s, "limit": self.limit}
        async with self._sessionmaker() as session:
            row = (await session.execute(_RESERVE, params)).one()
        if row.reserved is None:
            raise RateLimited(row.retry_after_s or self.window_s, message)
        return Reservation(bucket, row.reserved)

    async def release(self, reservation: Reservation, *, forget: bool = False) -> None:
        """The password was right: give the slot back (or, `forget`, clear the bucket)."""
        if reservation.window_ends is None:
            return
        async with self._sessionmaker() as session:
            if forget:
                await session.execute(_FORGET, {"bucket": reservation.bucket})
            else:
                params = {"bucket": reservation.bucket, "window_ends": reservation.window_ends}
                await session.execute(_RELEASE, params)
