"""Ride rules: who may publish and edit, the status state machine, and their events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

import channels
from channels.types import iso
from models import Ride, User
from server import channel_names, snapshot
from server.alerts import matching as alert_matching
from server.bookings.service import cancel_for_ride, lock_channels
from server.cache import Cache, profile_key, ride_key
from server.config import Settings
from server.db import commit, on_commit
from server.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from server.notifications.service import notify as notify_user
from server.rides.repository import confirmed_passengers, load
from server.rides.schemas import REQUIRED_ON_PATCH, RideIn, RidePatch
from server.rides.views import ride_view
from server.users.service import public_view

Action = Literal["cancel", "start", "complete"]
TRANSITIONS: dict[Action, tuple[str, str, str]] = {
    # action: (from, to, event)
    "cancel": ("scheduled", "cancelled", "ride.cancelled"),
    "start": ("scheduled", "started", "ride.started"),
    "complete": ("started", "completed", "ride.completed"),
}


async def create(
    session: AsyncSession, settings: Settings, driver: User, data: RideIn
) -> dict[str, Any]:
    if data.kind == "ride" and settings.require_verified_drivers and not driver.is_verified:
        raise Forbidden("Only verified drivers may publish rides")
    ride = Ride(
        driver_id=driver.id,
        kind=data.kind,
        origin=data.origin,
        destination=data.destination,
        departure_at=data.departure_at,
        seats_total=data.seats_total,
        seats_available=data.seats_total,
        price=data.price,
        currency=data.currency,
        notes=data.notes,
        # A taxi_share group has no driver to confirm requests: joining is instant.
        instant_booking=True if data.kind == "taxi_share" else data.instant_booking,
        driver_rating=driver.rating_sum / driver.rating_count if driver.rating_count else 0.0,
    )
    _set_points(ride, data.model_dump(exclude_unset=True))
    session.add(ride)
    await session.flush()  # the INSERT's RETURNING loads the server defaults: no refresh
    view = ride_view(ride, driver)
    channels.publish_after_commit(session, channel_names.RIDES_BOARD, "ride.created", view)
    await alert_matching.on_publish(session, ride)
    return view  # the caller commits (see server.idempotency)


def _set_points(ride: Ride, changes: dict[str, Any]) -> None:
    for name in ("origin", "destination"):
        key = f"{name}_point"
        if key in changes:
            pt = changes[key]
            setattr(ride, f"{name}_lat", pt["lat"] if pt else None)
            setattr(ride, f"{name}_lng", pt["lng"] if pt else None)


async def detail(session: AsyncSession, cache: Cache, ride_id: int) -> tuple[dict[str, Any], int]:
    """The ride with its driver summary, through the cache, and the head seq of `ride:{id}`
    read in the same snapshot as the ride (cached with it, so a cached pair is consistent too).
    `session` must be unused so far (see `server.snapshot`)."""

    async def load_ride() -> dict[str, Any] | None:
        await snapshot.begin(session)
        ride = await session.get(Ride, ride_id)
        if ride is None:
            return None
        seq = await snapshot.head(session, channel_names.ride(ride_id))
        return {"ride": ride_view(ride, None), "seq": seq}

    async def load_driver(driver_id: int) -> dict[str, Any] | None:
        user = await session.get(User, driver_id)
        return None if user is None else public_view(user)

    entry = await cache.get_or_load(ride_key(ride_id), load_ride)
    if entry is not None and "seq" not in entry:  # cached by an older version: read afresh
        entry = await load_ride()
    if entry is None:
        raise NotFound("Ride not found")
    view: dict[str, Any] = entry["ride"]
    profile = await cache.get_or_load(
        profile_key(view["driver_id"]), lambda: load_driver(view["driver_id"])
    )
    if profile is not None:
        view["driver"] = {
            k: profile[k]
            for k in ("id", "display_name", "is_verified", "rating_avg", "rating_count")
        }
    return view, int(entry["seq"])


def parse_if_match(value: str | None) -> int | None:
    """`3`, `"3"` or `W/"3"`; `*` or absent means unconditional."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip()
    text = text.removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 30:
        raise AppError('If-Match must be a ride version such as "3"')
    return int(text)  # a version beyond any real one is simply stale (412)


async def update(
    session: AsyncSession,
    cache: Cache,
    user: User,
    ride_id: int,
    patch: RidePatch,
    if_match: str | None,
) -> dict[str, Any]:
    expected = parse_if_match(if_match)
    changes = patch.model_dump(exclude_unset=True)
    for field in REQUIRED_ON_PATCH:
        if field in changes and changes[field] is None:
            raise ValidationFailed(
                f"{field} cannot be null",
                details=[{"field": f"body.{field}", "message": "may not be null"}],
            )
    ride = await load(session, ride_id, lock=True)
    if ride.driver_id != user.id:
        raise Forbidden("Only the driver may edit this ride")
    if expected is not None and expected != ride.version:
        raise PreconditionFailed(f"The ride is at version {ride.version}, not {expected}")
    if ride.status != "scheduled":
        raise Conflict(f"A {ride.status} ride cannot be edited")
    _apply(ride, changes)
    ride.version += 1
    await session.flush()
    await session.refresh(ride)
    view = ride_view(ride, user)
    passengers = await confirmed_passengers(session, ride.id)
    matches = await alert_matching.claim(session, ride)  # before the counters: D33
    await lock_channels(session, ride, [*passengers, *alert_matching.owners(matches)])
    await _ride_event(
        session, ride, view, "ride.updated", notify=passengers, notify_kind="ride.updated"
    )
    await alert_matching.notify(session, ride, matches)
    on_commit(session, lambda: cache.invalidate(ride_key(ride_id)))
    await commit(session)
    return view


def _apply(ride: Ride, changes: dict[str, Any]) -> None:
    if "seats_total" in changes:
        taken = ride.seats_total - ride.seats_available
        if changes["seats_total"] < taken:
            raise Conflict(f"{taken} seats are already booked")
        ride.seats_available = changes["seats_total"] - taken
    if ride.kind == "taxi_share":
        changes.pop("instant_booking", None)
    _set_points(ride, changes)
    for field, value in changes.items():
        if not field.endswith("_point"):
            setattr(ride, field, value)


@dataclass(frozen=True, slots=True)
class StartWindow:
    """When a ride may be started: from `early_s` before its departure to `late_s` after it
    (docs/api.md). Completing needs a started ride, so it cannot come earlier either."""

    early_s: int
    late_s: int

    @classmethod
    def of(cls, settings: Settings) -> StartWindow:
        return cls(settings.ride_start_early_s, settings.ride_start_late_s)

    def check(self, ride: Ride) -> None:
        now = datetime.now(UTC)
        opens = ride.departure_at - timedelta(seconds=self.early_s)
        closes = ride.departure_at + timedelta(seconds=self.late_s)
        if now < opens:
            raise Conflict(f"This ride can be started from {iso(opens)}, not earlier")
        if now > closes:
            raise Conflict(f"This ride can no longer be started (its window closed {iso(closes)})")


async def transition(
    session: AsyncSession,
    cache: Cache,
    user: User,
    ride_id: int,
    action: Action,
    window: StartWindow | None = None,
) -> dict[str, Any]:
    source = TRANSITIONS[action][0]
    ride = await load(session, ride_id, lock=True)
    if ride.driver_id != user.id:
        raise Forbidden("Only the driver may change this ride's status")
    if ride.status != source:
        raise Conflict(f"Cannot {action} a {ride.status} ride")
    if action == "start" and window is not None:
        window.check(ride)
    view = await apply_transition(session, cache, ride, user, action)
    await commit(session)
    return view


async def apply_transition(
    session: AsyncSession, cache: Cache, ride: Ride, driver: User, action: Action
) -> dict[str, Any]:
    """Move the ride (its row locked by the caller: step 1 of the lock order) to the action's
    target status with its events, notifications and cache invalidation; does not commit
    (through `server.db.commit`). Who may, and from which status, is the caller's to check:
    the driver's routes above, or auto-completion (server/jobs/autocomplete.py)."""
    _, target, event = TRANSITIONS[action]
    passengers = await confirmed_passengers(session, ride.id) if action == "cancel" else []
    ride.status = target
    ride.version += 1
    if action == "cancel":
        await cancel_for_ride(session, ride, driver)
    await session.flush()
    await session.refresh(ride)
    view = ride_view(ride, driver)
    await _ride_event(session, ride, view, event, notify=passengers, notify_kind="ride.cancelled")
    ride_id = ride.id
    on_commit(session, lambda: cache.invalidate(ride_key(ride_id)))
    return view


async def _ride_event(
    session: AsyncSession,
    ride: Ride,
    view: dict[str, Any],
    event: str,
    notify: list[int],
    notify_kind: str,
) -> None:
    """The `ride.*` event on `ride:{id}`, notifications to the confirmed passengers (for changes
    and cancellation), and the live event on the `rides` board."""
    await channels.append(session, channel_names.ride(ride.id), event, view)
    for passenger_id in notify:
        await notify_user(session, passenger_id, notify_kind, {"ride": view})
    board_event = "ride.cancelled" if event == "ride.cancelled" else "ride.updated"
    channels.publish_after_commit(session, channel_names.RIDES_BOARD, board_event, view)
