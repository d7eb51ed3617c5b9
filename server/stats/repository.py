"""The day's counts, read from PostgreSQL (exact: they count committed rows).

Each count is a range scan of a `created_at` index (migration 20261130_stats_01), so its cost
grows with the day's rows, not with the table (docs/benchmarks.md, "Live statistics")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

BUSIEST_ROUTES = 10

_COUNTS = text(
    """
    SELECT
      (SELECT count(*) FROM rides WHERE created_at >= :start AND created_at < :end),
      (SELECT coalesce(sum(seats), 0) FROM bookings
        WHERE created_at >= :start AND created_at < :end
          AND status IN ('pending', 'confirmed')),
      (SELECT count(*) FROM messages WHERE created_at >= :start AND created_at < :end)
    """
)

# One group per route compared case-insensitively, spelt as the day's first ride on it spells
# it. Ties: the lower-cased origin, then destination, in byte order (deterministic everywhere).
_ROUTES = text(
    """
    SELECT (array_agg(origin ORDER BY id))[1], (array_agg(destination ORDER BY id))[1],
           count(*) AS rides
    FROM rides
    WHERE created_at >= :start AND created_at < :end
    GROUP BY lower(origin), lower(destination)
    ORDER BY rides DESC, lower(origin) COLLATE "C", lower(destination) COLLATE "C"
    LIMIT :limit
    """
)


@dataclass(frozen=True, slots=True)
class DayCounts:
    rides: int
    seats: int
    messages: int
    routes: list[tuple[str, str, int]]


async def day_counts(session: AsyncSession, start: datetime, end: datetime) -> DayCounts:
    """Rides published, seats in active bookings made, messages sent in [start, end)."""
    window = {"start": start, "end": end}
    rides, seats, messages = (await session.execute(_COUNTS, window)).one()
    rows = await session.execute(_ROUTES, {**window, "limit": BUSIEST_ROUTES})
    routes = [(origin, destination, int(n)) for origin, destination, n in rows]
    return DayCounts(int(rides), int(seats), int(messages), routes)
