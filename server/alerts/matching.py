"""Which alerts a ride newly matches, recorded and notified exactly once per (alert, ride).

Called inside the transaction that publishes a ride, edits it, or gives it seats back, after
the change is flushed and with the ride row locked (publish: not yet visible to anyone else), so
the match sees exactly the state that commits. `claim` inserts the new (alert, ride) pairs
(`ON CONFLICT DO NOTHING` on the pair's primary key) and returns them; `notify` stores and
pushes one `ride.matched` per claimed pair. A pair claimed once is never notified again: not on
later edits, not on retries, not by another instance (the second insert of a pair waits for
the first transaction, then does nothing).

Lock order (docs/decisions.md D33): `claim` takes no channel counter; the caller adds the owners'
`user:` channels (`owner_channels`) to the counters it locks, sorted, before any append, then
calls `notify`. `on_publish` does all three for a path with no other channel to lock.

Cost (docs/decisions.md D34): the rule is "the alert's lowered text is a substring of the
ride's", i.e. the alert's key equals one of the ride's substrings. The query enumerates the
substrings of the ride's lowered origin and destination (a 40-character name has 820) and looks
them up in the btree index on (origin_key, destination_key); price, seats, window, owner and
age are checked on the few candidates only. No alert is scanned per ride.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import channels
from channels.types import iso
from models import Ride
from server import channel_names
from server.notifications.service import notify as notify_user

KIND = "ride.matched"

# The ride's lowered text is lowered by PostgreSQL and the alert's by Python, exactly as search
# compares `lower(ride.origin)` with the lowered query (server/rides/search.py).
_CLAIM = text(
    """
    WITH r AS (
        SELECT id, driver_id, lower(origin) AS o, lower(destination) AS d, departure_at,
               price, seats_available, created_at
        FROM rides
        WHERE id = :ride_id AND status = 'scheduled' AND departure_at > now()
    ), candidates AS (
        SELECT a.id, a.user_id FROM r JOIN alerts a
          ON a.origin_key = ANY(ARRAY(
                SELECT substr(r.o, i, n) FROM r, generate_series(1, length(r.o)) AS i,
                       generate_series(1, length(r.o) - i + 1) AS n))
         AND a.destination_key = ANY(ARRAY(
                SELECT substr(r.d, i, n) FROM r, generate_series(1, length(r.d)) AS i,
                       generate_series(1, length(r.d) - i + 1) AS n))
        WHERE a.user_id <> r.driver_id
          AND a.created_at <= r.created_at
          AND (a.departure_from IS NULL OR r.departure_at >= a.departure_from)
          AND (a.departure_to IS NULL OR r.departure_at <= a.departure_to)
          AND (a.max_price IS NULL OR r.price <= a.max_price)
          AND (a.min_seats IS NULL OR r.seats_available >= a.min_seats)
    )
    INSERT INTO alert_matches (alert_id, ride_id, user_id)
    SELECT c.id, :ride_id, c.user_id FROM candidates c ORDER BY c.id
    ON CONFLICT DO NOTHING
    RETURNING alert_id, user_id
    """
)


@dataclass(frozen=True, slots=True)
class Match:
    alert_id: int
    user_id: int


async def claim(session: AsyncSession, ride_id: int) -> list[Match]:
    """Record the alerts the ride (as flushed in this transaction) matches for the first time;
    the new pairs, by alert id. Nothing is notified yet (see `notify`)."""
    rows = (await session.execute(_CLAIM, {"ride_id": ride_id})).all()
    return sorted((Match(r.alert_id, r.user_id) for r in rows), key=lambda m: m.alert_id)


def owners(matches: list[Match]) -> list[int]:
    return sorted({m.user_id for m in matches})


def owner_channels(matches: list[Match]) -> list[str]:
    return [channel_names.user(uid) for uid in owners(matches)]


def matched_data(alert_id: int, ride: Ride) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "ride_id": ride.id,
        "origin": ride.origin,
        "destination": ride.destination,
        "departure_at": iso(ride.departure_at),
        "price": float(ride.price) if ride.price is not None else None,
        "seats_available": ride.seats_available,
    }


async def notify(session: AsyncSession, ride: Ride, matches: list[Match]) -> None:
    """One `ride.matched` notification per claimed pair, in the caller's transaction. The
    owners' channel counters must already be locked when there is more than one channel."""
    for match in matches:
        await notify_user(session, match.user_id, KIND, matched_data(match.alert_id, ride))


async def on_publish(session: AsyncSession, ride: Ride) -> None:
    """Claim and notify for a transaction that appends to no other channel."""
    matches = await claim(session, ride.id)
    if matches:
        await channels.lock_channels(session, owner_channels(matches))
        await notify(session, ride, matches)
