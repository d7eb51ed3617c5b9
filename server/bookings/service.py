"""Booking rules and their events (PROTOCOL.md sections 1 and 3).

Seat accounting is a conditional UPDATE (`seats_available >= n`) on the ride row, atomic in
PostgreSQL whatever the number of instances, with a CHECK constraint as the last word; a
pending booking holds no seats. Every change appends its events in the same transaction.
Every path takes its locks in the one order of `server.rides.repository`: the ride row, then
its bookings by id, then the channel counters (sorted).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

import channels
from channels.types import iso
from models import Booking, Ride, User
from server import channel_names
from server.alerts import matching as alert_matching
from server.cache import Cache, ride_key
from server.db import commit, on_commit
from server.errors import Conflict, Forbidden, NotFound
from server.notifications.service import notify
from server.pagination import Page, before_cursor, newest_first
from server.rides import repository as rides
from server.rides.views import ride_view


def booking_view(booking: Booking) -> dict[str, Any]:
    return {
        "id": booking.id,
        "ride_id": booking.ride_id,
        "passenger_id": booking.passenger_id,
        "seats": booking.seats,
        "status": booking.status,
        "cancelled_by": booking.cancelled_by,
        "created_at": iso(booking.created_at),
        "updated_at": iso(booking.updated_at),
    }


def _seats_view(booking: Booking, ride: Ride) -> dict[str, Any]:
    """What `ride:{id}` shows of a booking: no passenger identity."""
    return {
        "booking_id": booking.id,
        "ride_id": ride.id,
        "seats": booking.seats,
        "seats_available": ride.seats_available,
    }


async def request(
    session: AsyncSession,
    cache: Cache,
    user: User,
    ride_id: int,
    seats: int,
    *,
    max_held: int = 0,
) -> dict[str, Any]:
    """Create a booking (pending, or confirmed at once on an instant ride). Does not commit.
    `max_held` (> 0) bounds the seats the user holds in pending and confirmed bookings on
    rides that are not over, this one included."""
    ride = await rides.load(session, ride_id, lock=True)
    if ride.driver_id == user.id:
        raise Conflict("You cannot book your own ride")
    _check_bookable(ride, seats)
    if max_held > 0:
        await _check_held(session, user.id, seats, max_held)
    await lock_channels(session, ride, [user.id, ride.driver_id])
    booking = Booking(ride_id=ride.id, passenger_id=user.id, seats=seats, status="pending")
    try:
        async with session.begin_nested():
            session.add(booking)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("You already have an active booking on this ride") from exc
    if ride.instant_booking:
        await _take_seats(session, ride, seats)
        booking.status = "confirmed"
        await session.flush()
        await session.refresh(booking)
        await _confirmed(session, cache, ride, booking, notify_driver=True)
    else:
        await session.refresh(booking)
        view = booking_view(booking)
        for uid in (user.id, ride.driver_id):
            await channels.append(session, channel_names.user(uid), "booking.requested", view)
        await notify(session, ride.driver_id, "booking.requested", {"booking": view})
    return booking_view(booking)


_HOLD_LOCK = text("SELECT pg_advisory_xact_lock(1936024417, (:user_id % 2147483647)::int)")
_HELD = text(
    """
    SELECT COALESCE(sum(b.seats), 0) FROM bookings b JOIN rides r ON r.id = b.ride_id
    WHERE b.passenger_id = :user_id AND b.status IN ('pending', 'confirmed')
      AND r.status IN ('scheduled', 'started')
    """
)


async def _check_held(session: AsyncSession, user_id: int, seats: int, max_held: int) -> None:
    """A user's booking requests take a transaction-scoped advisory lock of their own (no row
    lock, so no new lock order with rides and bookings), then count what they hold: two
    requests at once on two instances cannot both pass the bound."""
    await session.execute(_HOLD_LOCK, {"user_id": user_id})
    held = int((await session.execute(_HELD, {"user_id": user_id})).scalar_one())
    if held + seats > max_held:
        raise Conflict(
            f"You already hold {held} seats in pending or confirmed bookings; "
            f"at most {max_held} at a time"
        )


def _check_bookable(ride: Ride, seats: int) -> None:
    if ride.status != "scheduled":
        raise Conflict(f"The ride is {ride.status}")
    if ride.departure_at <= datetime.now(UTC):
        raise Conflict("The ride has already departed")
    if seats > ride.seats_available:
        raise Conflict(f"Only {ride.seats_available} seats are available")


async def _take_seats(session: AsyncSession, ride: Ride, seats: int) -> None:
    left = (
        await session.execute(
            update(Ride)
            .where(Ride.id == ride.id, Ride.status == "scheduled", Ride.seats_available >= seats)
            .values(seats_available=Ride.seats_available - seats)
            .returning(Ride.seats_available)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if left is None:
        raise Conflict("Not enough seats available")
    set_committed_value(ride, "seats_available", left)


async def _free_seats(session: AsyncSession, ride: Ride, seats: int) -> None:
    left = (
        await session.execute(
            update(Ride)
            .where(Ride.id == ride.id)
            .values(seats_available=Ride.seats_available + seats)
            .returning(Ride.seats_available)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    set_committed_value(ride, "seats_available", left)


async def _confirmed(
    session: AsyncSession, cache: Cache, ride: Ride, booking: Booking, *, notify_driver: bool
) -> None:
    view = booking_view(booking)
    await channels.append(
        session, channel_names.ride(ride.id), "booking.confirmed", _seats_view(booking, ride)
    )
    await channels.append(
        session, channel_names.user(booking.passenger_id), "booking.confirmed", view
    )
    await notify(session, booking.passenger_id, "booking.confirmed", {"booking": view})
    if notify_driver:
        await notify(session, ride.driver_id, "booking.confirmed", {"booking": view})
    await _seats_changed(session, cache, ride)


async def _seats_changed(session: AsyncSession, cache: Cache, ride: Ride) -> None:
    driver = await session.get(User, ride.driver_id)
    channels.publish_after_commit(
        session, channel_names.RIDES_BOARD, "ride.updated", ride_view(ride, driver)
    )
    on_commit(session, lambda: cache.invalidate(ride_key(ride.id)))


async def _load_for_update(session: AsyncSession, booking_id: int) -> tuple[Booking, Ride]:
    """The booking and its ride, both locked, then the channel counters this change may
    append to."""
    booking, ride = await _load_locked(session, booking_id)
    await lock_channels(session, ride, [booking.passenger_id, ride.driver_id], chat=True)
    return booking, ride


async def _load_locked(session: AsyncSession, booking_id: int) -> tuple[Booking, Ride]:
    """The booking and its ride, both locked: the ride row first (a booking never moves to
    another ride, so reading its ride id unlocked is safe), then the booking."""
    ride_id = await session.scalar(select(Booking.ride_id).where(Booking.id == booking_id))
    if ride_id is None:
        raise NotFound("Booking not found")
    ride = await rides.load(session, ride_id, lock=True)
    booking = await session.get(Booking, booking_id, with_for_update=True)
    if booking is None:
        raise NotFound("Booking not found")
    return booking, ride


async def lock_channels(
    session: AsyncSession, ride: Ride, user_ids: list[int], *, chat: bool = False
) -> None:
    """Step 3 of the lock order: the counters of the ride's channels and of the users' channels
    that a booking change appends to (events and notifications), sorted."""
    names = [channel_names.ride(ride.id), *(channel_names.user(uid) for uid in user_ids)]
    if chat:
        names.append(channel_names.chat(ride.id))
    await channels.lock_channels(session, names)


async def confirm(
    session: AsyncSession, cache: Cache, user: User, booking_id: int
) -> dict[str, Any]:
    booking, ride = await _load_for_update(session, booking_id)
    if ride.driver_id != user.id:
        raise Forbidden("Only the driver may confirm bookings")
    if booking.status != "pending":
        raise Conflict(f"The booking is {booking.status}")
    _check_bookable(ride, booking.seats)
    await _take_seats(session, ride, booking.seats)
    booking.status = "confirmed"
    await session.flush()
    await session.refresh(booking)
    await _confirmed(session, cache, ride, booking, notify_driver=False)
    await commit(session)
    return booking_view(booking)


async def reject(session: AsyncSession, user: User, booking_id: int) -> dict[str, Any]:
    booking, ride = await _load_for_update(session, booking_id)
    if ride.driver_id != user.id:
        raise Forbidden("Only the driver may reject bookings")
    if booking.status != "pending":
        raise Conflict(f"The booking is {booking.status}")
    booking.status = "rejected"
    await session.flush()
    await session.refresh(booking)
    view = booking_view(booking)
    for uid in (booking.passenger_id, ride.driver_id):
        await channels.append(session, channel_names.user(uid), "booking.rejected", view)
    await notify(session, booking.passenger_id, "booking.rejected", {"booking": view})
    await commit(session)
    return view


async def cancel(
    session: AsyncSession, cache: Cache, user: User, booking_id: int
) -> dict[str, Any]:
    booking, ride = await _load_locked(session, booking_id)
    if user.id not in (booking.passenger_id, ride.driver_id):
        raise Forbidden("Only the passenger or the driver may cancel this booking")
    if booking.status not in ("pending", "confirmed"):
        raise Conflict(f"The booking is {booking.status}")
    if booking.status == "confirmed" and ride.status != "scheduled":
        raise Conflict(f"The ride is {ride.status}")
    matches: list[alert_matching.Match] = []
    if booking.status == "confirmed":  # seats back: the ride may now match alerts
        await _free_seats(session, ride, booking.seats)
        matches = await alert_matching.claim(session, ride)  # before the counters: D33
    users = [booking.passenger_id, ride.driver_id, *alert_matching.owners(matches)]
    await lock_channels(session, ride, users, chat=True)
    other = ride.driver_id if user.id == booking.passenger_id else booking.passenger_id
    await _cancel(session, cache, ride, booking, by=user.id, notify_ids=[other])
    await alert_matching.notify(session, ride, matches)
    await commit(session)
    return booking_view(booking)


async def _cancel(
    session: AsyncSession,
    cache: Cache | None,
    ride: Ride,
    booking: Booking,
    by: int,
    notify_ids: list[int],
) -> None:
    """Cancel the booking and append its events. A confirmed booking's seats must already be
    back on the ride (`_free_seats`), so that alerts could be matched before the counters."""
    was_confirmed = booking.status == "confirmed"
    booking.status, booking.cancelled_by = "cancelled", by
    await session.flush()
    await session.refresh(booking)
    view = booking_view(booking)
    if was_confirmed:
        await channels.append(
            session, channel_names.ride(ride.id), "booking.cancelled", _seats_view(booking, ride)
        )
        # The passenger is no longer a member of the ride chat: no later message reaches them.
        await channels.revoke(session, channel_names.chat(ride.id), booking.passenger_id)
        if cache is not None:
            await _seats_changed(session, cache, ride)
    for uid in (booking.passenger_id, ride.driver_id):
        await channels.append(session, channel_names.user(uid), "booking.cancelled", view)
    for uid in notify_ids:
        await notify(session, uid, "booking.cancelled", {"booking": view})


async def cancel_for_ride(session: AsyncSession, ride: Ride, driver: User) -> None:
    """The ride is being cancelled: cancel its active bookings. Confirmed passengers get the
    `ride.cancelled` notification; pending ones a `booking.cancelled` one."""
    active = await session.scalars(
        select(Booking)
        .where(Booking.ride_id == ride.id, Booking.status.in_(("pending", "confirmed")))
        .order_by(Booking.id)
        .with_for_update()
    )
    bookings = list(active)
    users = [ride.driver_id, *(b.passenger_id for b in bookings)]
    await lock_channels(session, ride, users, chat=True)
    for booking in bookings:
        notify_ids = [booking.passenger_id] if booking.status == "pending" else []
        if booking.status == "confirmed":
            await _free_seats(session, ride, booking.seats)
        await _cancel(session, None, ride, booking, by=driver.id, notify_ids=notify_ids)


async def mine(
    session: AsyncSession, user_id: int, cursor: str | None, limit: int
) -> Page[Booking]:
    stmt = select(Booking).where(Booking.passenger_id == user_id)
    return await _page(session, stmt, cursor, limit)


async def for_ride(
    session: AsyncSession, user_id: int, ride_id: int, cursor: str | None, limit: int
) -> Page[Booking]:
    ride = await rides.load(session, ride_id)
    if ride.driver_id != user_id:
        raise Forbidden("Only the driver sees a ride's bookings")
    return await _page(session, select(Booking).where(Booking.ride_id == ride_id), cursor, limit)


async def _page(session: AsyncSession, stmt: Any, cursor: str | None, limit: int) -> Page[Booking]:
    return await newest_first(session, stmt, Booking.id, before_cursor(cursor), limit)
