"""Which alerts a ride newly matches, recorded and notified exactly once per (alert, ride).

Called inside the transaction that publishes a ride, edits it, or gives it seats back, after
the change is flushed and with the ride row locked (publish: not yet visible to anyone else), so
the match sees exactly the state that commits. `claim` inserts the new (alert, ride) pairs
(`ON CONFLICT DO NOTHING` on the pair's primary key) and returns them; `notify` stores and
pushes one `ride.matched` per claimed pair. A pair claimed once is never notified again: not on
later edits, not on retries, not by another instance (the second insert of a pair waits for
the first transaction, then does nothing).

Lock order (docs/decisions.md D33): `claim` takes no channel counter. A caller that appends to
other channels too adds the owners' `user:` channels (`owners`) to the counters it locks, sorted,
before its first append, then calls `notify`; `notify` alone takes the owners' counters sorted
(one batched append), so `on_publish` needs no lock of its own.

Cost (docs/decisions.md D34): the rule is "the alert's lowered text is a substring of the
ride's", i.e. the alert's key equals one of the ride's substrings. The query enumerates the
substrings of the shorter of the ride's lowered origin and destination (a 40-character name has
820) and looks them up in the btree index on that key; the other text, price, seats, window,
owner and age are checked on those candidates only. No alert is scanned per ride.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from channels.types import iso
from models import Ride
from server.notifications.service import notify_many

KIND = "ride.matched"


def _claim_sql(probe: str, other: str) -> TextClause:
    """Candidates by index: the alerts whose `{probe}_key` is one of the substrings of the ride's
    lowered `probe` text (`= ANY` of an array: one btree probe each); the `other` text is then a
    `strpos` test per candidate. The ride's text is lowered by PostgreSQL and the alert's by
    Python, exactly as search compares `lower(ride.origin)` with the lowered query
    (server/rides/search.py); `substr`, `strpos` and `=` are literal (no wildcards)."""
    return text(
        f"""
        WITH r AS (
            SELECT id, driver_id, lower(origin) AS origin, lower(destination) AS destination,
                   departure_at, price, seats_available, created_at
            FROM rides
            WHERE id = :ride_id AND status = 'scheduled' AND departure_at > now()
        ), candidates AS (
            SELECT a.id, a.user_id FROM r JOIN alerts a
              ON a.{probe}_key = ANY(ARRAY(
                    SELECT substr(r.{probe}, i, n)
                    FROM r, generate_series(1, length(r.{probe})) AS i,
                         generate_series(1, length(r.{probe}) - i + 1) AS n))
            WHERE strpos(r.{other}, a.{other}_key) > 0
              AND a.user_id <> r.driver_id
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
        """  # noqa: S608 - only the two fixed column names are interpolated
    )


_BY_ORIGIN = _claim_sql("origin", "destination")
_BY_DESTINATION = _claim_sql("destination", "origin")


@dataclass(frozen=True, slots=True)
class Match:
    alert_id: int
    user_id: int


async def claim(session: AsyncSession, ride: Ride) -> list[Match]:
    """Record the alerts the ride (as flushed in this transaction) matches for the first time;
    the new pairs, by alert id. Nothing is notified yet (see `notify`). The shorter of its two
    texts is the one whose substrings are looked up (a 200-character name has 20,100)."""
    by_origin = len(ride.origin) <= len(ride.destination)
    stmt = _BY_ORIGIN if by_origin else _BY_DESTINATION
    rows = (await session.execute(stmt, {"ride_id": ride.id})).all()
    return sorted((Match(r.alert_id, r.user_id) for r in rows), key=lambda m: m.alert_id)


def owners(matches: list[Match]) -> list[int]:
    return sorted({m.user_id for m in matches})


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
    """One `ride.matched` notification per claimed pair, in the caller's transaction, stored
    and appended in one batch (a ride on a popular route may match hundreds of alerts)."""
    notes = [(m.user_id, KIND, matched_data(m.alert_id, ride)) for m in matches]
    await notify_many(session, notes)


async def on_publish(session: AsyncSession, ride: Ride) -> None:
    """Claim and notify for a transaction that has appended to no channel yet (the batch
    takes the owners' counters sorted)."""
    await notify(session, ride, await claim(session, ride))
