"""`ride.reminder`: once a scheduled ride is within REMINDER_LEAD_S of its departure, its driver
and each confirmed passenger get one notification (PROTOCOL.md section 6).

Exactly once per (ride, user), whatever the number of instances: a batch locks its rides
(`FOR NO KEY UPDATE SKIP LOCKED`: instances take different rides, none waits), inserts one
`ride_reminders` row per recipient with `ON CONFLICT DO NOTHING RETURNING`, and stores and
pushes a notification only for the rows it inserted, all in one transaction. A crash before the
commit leaves nothing behind (the next run sends them); after it, the rows refuse a second send.

Never after departure (`departure_at > now` is part of the claim, so an instance back from
downtime sends no stale reminders), never for a ride that is not `scheduled`. A passenger
confirmed inside the lead time is picked up by the next run: the claim looks for any recipient
without a row. Lock order (docs/decisions.md D33): the ride rows, then (bookings are only read:
every booking change locks its ride first, so none can commit meanwhile) the `user:` counters,
sorted (`notify_many`: one batched append).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.types import iso
from models import Booking, Ride, RideReminder
from server.notifications.service import notify_many

KIND = "ride.reminder"

_RECIPIENTS = text(
    """
    SELECT id AS ride_id, driver_id AS user_id FROM rides WHERE id = ANY(CAST(:ids AS bigint[]))
    UNION
    SELECT ride_id, passenger_id FROM bookings
    WHERE ride_id = ANY(CAST(:ids AS bigint[])) AND status = 'confirmed'
    ORDER BY ride_id, user_id
    """
)

_RECORD = text(
    """
    INSERT INTO ride_reminders (ride_id, user_id, sent_at)
    SELECT r, u, :now
    FROM unnest(CAST(:ride_ids AS bigint[]), CAST(:user_ids AS bigint[])) AS t(r, u)
    ON CONFLICT DO NOTHING
    RETURNING ride_id, user_id
    """
)


def _unreminded(user_id: Any) -> Any:
    return ~exists().where(RideReminder.ride_id == Ride.id, RideReminder.user_id == user_id)


def _claim(now: datetime, lead_s: int, batch: int) -> Any:
    """Due rides with at least one recipient not reminded yet, locked, skipping locked ones."""
    passenger_due = exists().where(
        Booking.ride_id == Ride.id, Booking.status == "confirmed", _unreminded(Booking.passenger_id)
    )
    return (
        select(Ride)
        .where(
            Ride.status == "scheduled",
            Ride.departure_at > now,
            Ride.departure_at <= now + timedelta(seconds=lead_s),
            or_(_unreminded(Ride.driver_id), passenger_due),
        )
        .order_by(Ride.departure_at, Ride.id)
        .limit(batch)
        .with_for_update(key_share=True, skip_locked=True, of=Ride)
    )


def reminder_data(ride: Ride) -> dict[str, Any]:
    return {
        "ride_id": ride.id,
        "departure_at": iso(ride.departure_at),
        "origin": ride.origin,
        "destination": ride.destination,
    }


async def send_due(
    sessionmaker: async_sessionmaker[AsyncSession], now: datetime, lead_s: int, batch: int
) -> int:
    """One batch: reminders for up to `batch` due rides; returns how many were sent."""
    if lead_s <= 0:
        return 0
    async with sessionmaker() as session, session.begin():
        rides = {r.id: r for r in (await session.scalars(_claim(now, lead_s, batch))).all()}
        if not rides:
            return 0
        pairs = (await session.execute(_RECIPIENTS, {"ids": list(rides)})).all()
        params = {
            "now": now,
            "ride_ids": [p.ride_id for p in pairs],
            "user_ids": [p.user_id for p in pairs],
        }
        sent = sorted((r.ride_id, r.user_id) for r in await session.execute(_RECORD, params))
        # Stored and appended in two statements (the batch takes the counters sorted).
        await notify_many(session, [(u, KIND, reminder_data(rides[r])) for r, u in sent])
        return len(sent)
