"""Account deletion: the account is anonymised (rides, bookings, messages, reviews and events
keep referring to its id), every session and socket of it ends, and its future rides and
bookings are cancelled through the ride and booking rules, with their usual events."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import Booking, Ride, User
from server.alerts import service as alerts
from server.auth.service import AuthService
from server.bookings import service as bookings
from server.cache import Cache, profile_key
from server.db import commit, on_commit
from server.errors import AppError
from server.rides import service as rides

DELETED_NAME = "Deleted user"
UNUSABLE_HASH = "!deleted"  # matches no password (server/auth/passwords.py)


def deleted_email(user_id: int) -> str:
    """Unique (the email index), and in `.invalid`, a domain that cannot exist (RFC 2606)."""
    return f"deleted-{user_id}@deleted.invalid"


async def delete_account(
    auth: AuthService,
    sessionmaker: async_sessionmaker[AsyncSession],
    cache: Cache,
    user_id: int,
    password: str,
) -> None:
    checked = await auth.verify_own_password(user_id, password)
    # Cancel first, while the account is whole: a failure leaves it usable, and the client
    # can try again. Then anonymise and end every session; a ride created by a request that
    # was in flight meanwhile is caught by the second pass.
    await _cancel_future(sessionmaker, cache, user_id)
    async with sessionmaker() as session:
        user = await auth.lock_account(session, user_id, checked)
        user.email = deleted_email(user_id)
        user.phone = None
        user.bio = None
        user.display_name = DELETED_NAME
        user.password_hash = UNUSABLE_HASH
        user.is_verified = False
        user.deleted_at = datetime.now(UTC)
        await alerts.remove_all(session, user_id)  # a deleted account hears of no ride
        await auth.end_all_sessions(session, user_id, "deleted")
        on_commit(session, lambda: cache.invalidate(profile_key(user_id)))
        await commit(session)
    await _cancel_future(sessionmaker, cache, user_id)


async def _cancel_future(
    sessionmaker: async_sessionmaker[AsyncSession], cache: Cache, user_id: int
) -> None:
    """The user's scheduled rides (cancelled as their driver would) and active bookings on
    scheduled rides (cancelled as their passenger would), each in its own transaction."""
    async with sessionmaker() as session:
        ride_ids = list(
            await session.scalars(
                select(Ride.id)
                .where(Ride.driver_id == user_id, Ride.status == "scheduled")
                .order_by(Ride.id)
            )
        )
        booking_ids = list(
            await session.scalars(
                select(Booking.id)
                .join(Ride, Ride.id == Booking.ride_id)
                .where(
                    Booking.passenger_id == user_id,
                    Booking.status.in_(("pending", "confirmed")),
                    Ride.status == "scheduled",
                )
                .order_by(Booking.id)
            )
        )
    for ride_id in ride_ids:
        async with sessionmaker() as session:
            driver = await session.get(User, user_id)
            assert driver is not None
            try:
                await rides.transition(session, cache, driver, ride_id, "cancel")
            except AppError:  # changed meanwhile (started, already cancelled)
                continue
    for booking_id in booking_ids:
        async with sessionmaker() as session:
            passenger = await session.get(User, user_id)
            assert passenger is not None
            try:
                await bookings.cancel(session, cache, passenger, booking_id)
            except AppError:
                continue
