"""Alert rules: at most `MAX_PER_USER` per user, listing and deleting one's own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from channels.types import iso
from models import Alert
from server.alerts.schemas import AlertIn
from server.db import commit
from server.errors import Conflict, NotFound
from server.pagination import Page, before_cursor, newest_first

MAX_PER_USER = 20

# A transaction-scoped advisory lock per user (its own key space, see server/bookings/service.py
# for the other one): two creations at once, on any instances, count one after the other.
_USER_LOCK = text("SELECT pg_advisory_xact_lock(1634497652, (:user_id % 2147483647)::int)")


def alert_view(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "origin": alert.origin,
        "destination": alert.destination,
        "departure_from": iso(alert.departure_from) if alert.departure_from else None,
        "departure_to": iso(alert.departure_to) if alert.departure_to else None,
        "max_price": float(alert.max_price) if alert.max_price is not None else None,
        "min_seats": alert.min_seats,
        "created_at": iso(alert.created_at),
    }


async def create(session: AsyncSession, user_id: int, data: AlertIn) -> dict[str, Any]:
    """The new alert (does not commit). 409 once the user has `MAX_PER_USER`."""
    await session.execute(_USER_LOCK, {"user_id": user_id})
    count = await session.scalar(select(func.count()).where(Alert.user_id == user_id))
    if (count or 0) >= MAX_PER_USER:
        raise Conflict(f"At most {MAX_PER_USER} alerts per user; delete one first")
    alert = Alert(
        user_id=user_id,
        origin=data.origin,
        destination=data.destination,
        origin_key=data.origin.lower(),
        destination_key=data.destination.lower(),
        departure_from=data.departure_from,
        departure_to=data.departure_to,
        max_price=data.max_price,
        min_seats=data.min_seats,
    )
    session.add(alert)
    await session.flush()  # the INSERT's RETURNING loads id and created_at
    return alert_view(alert)


async def mine(session: AsyncSession, user_id: int, cursor: str | None, limit: int) -> Page[Alert]:
    """Newest first (by id), served by ix_alerts_user (user_id, id)."""
    stmt = select(Alert).where(Alert.user_id == user_id)
    return await newest_first(session, stmt, Alert.id, before_cursor(cursor), limit)


async def remove(session: AsyncSession, user_id: int, alert_id: int) -> None:
    """Delete one's own alert (its match records go with it); another user's is 404 too, so
    alert ids reveal nothing."""
    deleted = await session.scalar(
        delete(Alert).where(Alert.id == alert_id, Alert.user_id == user_id).returning(Alert.id)
    )
    if deleted is None:
        raise NotFound("Alert not found")
    await commit(session)


async def remove_all(session: AsyncSession, user_id: int) -> None:
    """Every alert of the user (account deletion). Does not commit."""
    await session.execute(delete(Alert).where(Alert.user_id == user_id))
