from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

import channels
from channels.types import iso
from models import Booking, Message, Ride
from server import channel_names
from server.chat.schemas import MAX_BODY, MAX_CLIENT_ID
from server.errors import Forbidden, ValidationFailed
from server.pagination import Page, newest_first
from server.rides import repository as rides


def message_view(message: Message) -> dict[str, Any]:
    """The stored message; `client_id` only when the author sent one (so a client can match
    the `message.created` event to its pending message)."""
    view = {
        "id": message.id,
        "ride_id": message.ride_id,
        "author_id": message.author_id,
        "body": message.body,
        "created_at": iso(message.created_at),
    }
    if message.client_id is not None:
        view["client_id"] = message.client_id
    return view


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


async def post(
    session: AsyncSession, user_id: int, ride_id: int, body: str, client_id: str | None = None
) -> dict[str, Any]:
    """Store a message and append `message.created` on the chat channel. Does not commit.

    With a `client_id`, a message this author already stored on this ride under that id is
    returned as it is, with no second row and no second event: the unique index
    uq_messages_client_id decides, so two retries racing on two instances store one message
    (the later INSERT waits for the first to commit, then finds it)."""
    _check(body, client_id)
    ride = await _member_ride(session, user_id, ride_id)
    if client_id is None:
        message = Message(ride_id=ride.id, author_id=user_id, body=body)
        session.add(message)
        await session.flush()  # the INSERT's RETURNING brings the id and created_at back
    else:
        stored = await _insert_once(session, ride.id, user_id, body, client_id)
        if stored is None:
            return message_view(await _by_client_id(session, ride.id, user_id, client_id))
        message = stored
    view = message_view(message)
    await channels.append(session, channel_names.chat(ride.id), "message.created", view)
    return view


def _check(body: str, client_id: str | None) -> None:
    if not body.strip() or len(body) > MAX_BODY or "\x00" in body:
        raise ValidationFailed(
            f"body must be 1..{MAX_BODY} characters, not blank, without NUL",
            details=[{"field": "body.body", "message": "1..2000 characters, not blank"}],
        )
    if client_id is not None and (not 0 < len(client_id) <= MAX_CLIENT_ID or "\x00" in client_id):
        raise ValidationFailed(
            f"client_id must be 1..{MAX_CLIENT_ID} characters, without NUL",
            details=[{"field": "body.client_id", "message": "1..64 characters"}],
        )


async def _insert_once(
    session: AsyncSession, ride_id: int, author_id: int, body: str, client_id: str
) -> Message | None:
    """The new message, or None when this (ride, author, client_id) is already stored."""
    stmt = (
        insert(Message)
        .values(ride_id=ride_id, author_id=author_id, body=body, client_id=client_id)
        .on_conflict_do_nothing(
            index_elements=["ride_id", "author_id", "client_id"],
            index_where=Message.client_id.is_not(None),
        )
        .returning(Message)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _by_client_id(
    session: AsyncSession, ride_id: int, author_id: int, client_id: str
) -> Message:
    stmt = select(Message).where(
        Message.ride_id == ride_id, Message.author_id == author_id, Message.client_id == client_id
    )
    return (await session.execute(stmt)).scalar_one()
