"""Ride rows as other domains read them (bookings, chat, reviews, jobs): no rules, no events.

Domain services depend on this module rather than on `server.rides.service`, so the ride rules
(which cancel bookings when a ride is cancelled) can import the booking rules without a cycle.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Booking, Ride
from server.errors import NotFound


async def load(session: AsyncSession, ride_id: int, *, lock: bool = False) -> Ride:
    ride = await session.get(Ride, ride_id, with_for_update=lock)
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
