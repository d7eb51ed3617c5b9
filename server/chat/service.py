from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

import channels
from channels.types import iso
from models import Booking, Message, Ride
from server import channel_names
from server.chat.schemas import MAX_BODY
from server.errors import Forbidden, ValidationFailed
from server.pagination import Page, newest_first
from server.rides import repository as rides


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "ride_id": message.ride_id,
        "author_id": message.author_id,
        "body": message.body,
        "created_at": iso(message.created_at),
    }


async def is_member(session: AsyncSession, ride: Ride, user_id: int) -> bool:
    if ride.driver_id == user_id:
        return True
    stmt = select(
        exists().where(
            Booking.ride_id == ride.id,
            Booking.passenger_id == user_id,
            Booking.status == "confirmed",
        )
    )
    return bool((await session.execute(stmt)).scalar())


async def _member_ride(session: AsyncSession, user_id: int, ride_id: int) -> Ride:
    ride = await rides.load(session, ride_id)
    if not await is_member(session, ride, user_id):
        raise Forbidden("Only the driver and confirmed passengers may use this chat")
    return ride


async def history(
    session: AsyncSession, user_id: int, ride_id: int, before: int | None, limit: int
) -> Page[Message]:
    await _member_ride(session, user_id, ride_id)
    stmt = select(Message).where(Message.ride_id == ride_id)
    return await newest_first(session, stmt, Message.id, before, limit)


async def post(session: AsyncSession, user_id: int, ride_id: int, body: str) -> dict[str, Any]:
    """Store a message and append `message.created` on the chat channel. Does not commit."""
    if not body.strip() or len(body) > MAX_BODY or "\x00" in body:
        raise ValidationFailed(
            f"body must be 1..{MAX_BODY} characters, not blank, without NUL",
            details=[{"field": "body.body", "message": "1..2000 characters, not blank"}],
        )
    ride = await _member_ride(session, user_id, ride_id)
    message = Message(ride_id=ride.id, author_id=user_id, body=body)
    session.add(message)
    await session.flush()
    await session.refresh(message)
    view = message_view(message)
    await channels.append(session, channel_names.chat(ride.id), "message.created", view)
    return view
