"""Auto-completion: a ride still `scheduled` or `started` RIDE_AUTOCOMPLETE_S after its departure
is completed exactly as when its driver completes it (`server.rides.service.apply_transition`:
the same `ride.completed` event on `ride:{id}`, `ride.updated` on the board, cache invalidation),
which opens its reviews.

A `scheduled` ride goes straight to `completed` with the one `ride.completed` event: nobody
started it, so no `ride.started` is invented (docs/protocol.md, "Reminders and lifecycle").

Exactly once: a batch locks its rides `FOR NO KEY UPDATE SKIP LOCKED` (step 1 of the lock order,
docs/decisions.md D33), then the counters of their `ride:` channels sorted (step 3), and commits
the status change with its events; a ride another instance holds is skipped, and one completed
meanwhile no longer matches the claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import channels
from models import Ride, User
from server import channel_names
from server.cache import Cache
from server.db import commit
from server.rides.service import apply_transition

OPEN = ("scheduled", "started")


async def complete_overdue(
    sessionmaker: async_sessionmaker[AsyncSession],
    cache: Cache,
    now: datetime,
    after_s: int,
    batch: int,
) -> int:
    """One batch: complete up to `batch` overdue rides; returns how many."""
    if after_s <= 0:
        return 0
    claim = (
        select(Ride)
        .where(Ride.status.in_(OPEN), Ride.departure_at <= now - timedelta(seconds=after_s))
        .order_by(Ride.departure_at, Ride.id)
        .limit(batch)
        .with_for_update(key_share=True, skip_locked=True, of=Ride)
    )
    async with sessionmaker() as session:
        rides = list((await session.scalars(claim)).all())
        if not rides:
            return 0
        await channels.lock_channels(session, [channel_names.ride(r.id) for r in rides])
        drivers = await _drivers(session, rides)
        for ride in rides:
            await apply_transition(session, cache, ride, drivers[ride.driver_id], "complete")
        await commit(session)
        return len(rides)


async def _drivers(session: AsyncSession, rides: list[Ride]) -> dict[int, User]:
    ids = {r.driver_id for r in rides}
    return {u.id: u for u in await session.scalars(select(User).where(User.id.in_(ids)))}
