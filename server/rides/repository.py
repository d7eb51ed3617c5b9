"""Ride rows as other domains read them (bookings, chat, reviews, jobs): no rules, no events.

Domain services depend on this module rather than on `server.rides.service`, so the ride rules
(which cancel bookings when a ride is cancelled) can import the booking rules without a cycle.

Lock order (docs/decisions.md D33), the same on every path that changes a ride or its bookings:
1. the ride row (`load(..., lock=True)`: FOR NO KEY UPDATE, so inserts that only reference the
   ride, such as chat messages, are not blocked);
2. its booking rows, by id (a booking request takes its user's advisory lock here instead);
3. the event counters of every channel the transaction will append to, sorted by name
   (`channels.lock_channels`), before the first append.
A transaction never takes a lock of an earlier step after one of a later step.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Booking, Ride
from server.errors import NotFound


async def load(session: AsyncSession, ride_id: int, *, lock: bool = False) -> Ride:
    """The ride; with `lock`, its row locked (step 1 of the lock order)."""
    ride = await session.get(Ride, ride_id, with_for_update={"key_share": True} if lock else False)
    if ride is None:
        raise NotFound("Ride not found")
    return ride


async def confirmed_passengers(session: AsyncSession, ride_id: int) -> list[int]:
    rows = await session.scalars(
        select(Booking.passenger_id).where(
            Booking.ride_id == ride_id, Booking.status == "confirmed"
        )
    )
    return list(rows)
