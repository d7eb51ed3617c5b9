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

# One group per route compared case-insensitively (hash-aggregated), spelt as the day's first
# ride on it spells it (looked up for the ten kept only). Ties: the lower-cased origin, then
# destination, in byte order (the same everywhere, whatever the database's collation).
_ROUTES = text(
    """
    WITH routes AS (
      SELECT lower(origin) AS o, lower(destination) AS d, count(*) AS rides, min(id) AS first
      FROM rides
      WHERE created_at >= :start AND created_at < :end
      GROUP BY 1, 2
      ORDER BY rides DESC, lower(origin) COLLATE "C", lower(destination) COLLATE "C"
      LIMIT :limit
    )
    SELECT r.origin, r.destination, routes.rides
    FROM routes JOIN rides r ON r.id = routes.first
    ORDER BY routes.rides DESC, routes.o COLLATE "C", routes.d COLLATE "C"
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
