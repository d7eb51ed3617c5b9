"""Notifications: stored in the caller's transaction and pushed on `user:{id}` with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import channels
from models import Notification
from server import channel_names
from server.db import commit
from server.errors import Forbidden, NotFound
from server.notifications.schemas import NotificationOut
from server.pagination import Page, before_cursor, newest_first


async def notify(session: AsyncSession, user_id: int, kind: str, data: dict[str, Any]) -> None:
    """Store a notification and append `notification.created` on the user's channel, both in
    the caller's transaction."""
    note = Notification(user_id=user_id, kind=kind, data=data)
    session.add(note)
    await session.flush()
    await session.refresh(note)
    payload = NotificationOut.model_validate(note).model_dump(mode="json")
    await channels.append(session, channel_names.user(user_id), "notification.created", payload)


async def notify_many(
    session: AsyncSession, notes: Sequence[tuple[int, str, dict[str, Any]]]
) -> None:
    """`notify` for each (user_id, kind, data), in that order, in two statements whatever their
    number (a ride matching hundreds of alerts)."""
    if not notes:
        return
    stmt = insert(Notification).returning(
        Notification.id,
        Notification.user_id,
        Notification.kind,
        Notification.data,
        Notification.created_at,
        Notification.read_at,
        sort_by_parameter_order=True,
    )
    rows = (
        await session.execute(stmt, [{"user_id": u, "kind": k, "data": d} for u, k, d in notes])
    ).all()
    await channels.append_many(
        session,
        [
            (
                channel_names.user(row.user_id),
                "notification.created",
                NotificationOut.model_validate(row).model_dump(mode="json"),
            )
            for row in rows
        ],
    )


async def list_for(
    session: AsyncSession, user_id: int, unread: bool, cursor: str | None, limit: int
) -> Page[Notification]:
    stmt = select(Notification).where(Notification.user_id == user_id)
    if unread:
        stmt = stmt.where(Notification.read_at.is_(None))
    return await newest_first(session, stmt, Notification.id, before_cursor(cursor), limit)


async def unread_count(session: AsyncSession, user_id: int) -> int:
    """Served by the partial index ix_notifications_unread (user_id, id) WHERE read_at IS NULL."""
    stmt = select(func.count()).where(
        Notification.user_id == user_id, Notification.read_at.is_(None)
    )
    return int((await session.execute(stmt)).scalar_one())


async def mark_read(session: AsyncSession, user_id: int, notification_id: int) -> Notification:
    note = await session.get(Notification, notification_id, with_for_update=True)
    if note is None:
        raise NotFound("Notification not found")
    if note.user_id != user_id:
        raise Forbidden("Not your notification")
    if note.read_at is None:
        note.read_at = datetime.now(UTC)
    await commit(session)
    return note


async def mark_all_read(session: AsyncSession, user_id: int) -> int:
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=datetime.now(UTC))
    )
    await commit(session)
    return int(result.rowcount)  # type: ignore[attr-defined]
