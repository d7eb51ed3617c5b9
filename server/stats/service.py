"""The statistics object: the day's counts from PostgreSQL, the live counts from the roster.

- "today" is the UTC day: [00:00 UTC, next 00:00 UTC) of the moment of the call.
- `rides_published_today`: rides created today, whatever their status since.
- `seats_booked_today`: seats of the bookings made today that are still active (pending or
  confirmed); a rejected or cancelled booking stops counting.
- `messages_today`: chat messages stored today.
- `busiest_routes`: today's rides grouped by (origin, destination) case-insensitively, at most
  `BUSIEST_ROUTES`, most rides first, ties by origin then destination (lower-cased).
- `sockets_open`, `users_online`, `instances`: the roster's totals over the live instances
  (channels/roster.py): an instance that died stops counting once its heartbeat deadline has
  passed and any instance has swept it (within INSTANCE_TTL_S + INSTANCE_HEARTBEAT_S).

Without Redis the live counts cannot be read: `StatsUnavailable` (503 on REST).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from channels.roster import Roster, Totals
from server.errors import Unavailable
from server.stats import repository


class StatsUnavailable(Unavailable):
    """The live counts could not be read (Redis down or slow)."""


def utc_day(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The UTC day containing `now` (default: the current time), as [start, end)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


async def live_totals(roster: Roster) -> Totals:
    """Sockets, users and instances on every live instance (expired ones swept first)."""
    try:
        await roster.sweep()
        return await roster.totals()
    except (RedisError, OSError) as exc:
        raise StatsUnavailable(
            "Live counts are unavailable (the broker cannot be reached); retry shortly",
            details={"retry_after_s": 1},
            headers={"Retry-After": "1"},
        ) from exc


async def current(
    session: AsyncSession, roster: Roster, now: datetime | None = None
) -> dict[str, Any]:
    """The statistics object (server.stats.schemas.Stats) as plain JSON-ready data."""
    totals = await live_totals(roster)
    day = await repository.day_counts(session, *utc_day(now))
    return {
        "sockets_open": totals.sockets,
        "users_online": totals.users,
        "rides_published_today": day.rides,
        "seats_booked_today": day.seats,
        "messages_today": day.messages,
        "busiest_routes": [
            {"origin": origin, "destination": destination, "rides": rides}
            for origin, destination, rides in day.routes
        ],
        "instances": totals.instances,
    }
