"""Only after `completed`, only between participants, once per (ride, author, target). The
target's rating is kept by atomic increments, so concurrent reviews never lose one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, cast, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from channels.types import iso
from models import Review, Ride, User
from server.cache import Cache, profile_key
from server.db import on_commit
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.notifications.service import notify
from server.pagination import Page, before_cursor, newest_first
from server.reviews.schemas import ReviewIn
from server.rides import repository as rides


def review_view(review: Review) -> dict[str, Any]:
    return {
        "id": review.id,
        "ride_id": review.ride_id,
        "author_id": review.author_id,
        "target_id": review.target_id,
        "stars": review.stars,
        "comment": review.comment,
        "created_at": iso(review.created_at),
    }


async def create(
    session: AsyncSession, cache: Cache, author: User, ride_id: int, data: ReviewIn
) -> dict[str, Any]:
    """Does not commit (see server.idempotency)."""
    ride = await rides.load(session, ride_id)
    participants = {ride.driver_id, *await rides.confirmed_passengers(session, ride.id)}
    if author.id not in participants:
        raise Forbidden("Only the driver and confirmed passengers may review this ride")
    if data.target_id == author.id or data.target_id not in participants:
        raise ValidationFailed(
            "target_id must be another participant of this ride",
            details=[{"field": "body.target_id", "message": "not another participant"}],
        )
    if ride.status != "completed":
        raise Conflict("Reviews open once the ride is completed")
    review = Review(
        ride_id=ride.id,
        author_id=author.id,
        target_id=data.target_id,
        stars=data.stars,
        comment=data.comment,
    )
    try:
        async with session.begin_nested():
            session.add(review)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("You have already reviewed this participant for this ride") from exc
    avg = (
        await session.execute(
            update(User)
            .where(User.id == data.target_id)
            .values(rating_sum=User.rating_sum + data.stars, rating_count=User.rating_count + 1)
            .returning(cast(User.rating_sum, Float) / User.rating_count)
        )
    ).scalar_one()
    # Search sorts and filters by the driver's rating on the ride rows (indexed).
    await session.execute(
        update(Ride).where(Ride.driver_id == data.target_id).values(driver_rating=avg)
    )
    await session.refresh(review)
    view = review_view(review)
    await notify(session, data.target_id, "review.created", {"review": view})
    on_commit(session, lambda: cache.invalidate(profile_key(data.target_id)))
    return view


async def for_user(
    session: AsyncSession, user_id: int, cursor: str | None, limit: int
) -> Page[Review]:
    if await session.get(User, user_id) is None:
        raise NotFound("User not found")
    stmt = select(Review).where(Review.target_id == user_id)
    return await newest_first(session, stmt, Review.id, before_cursor(cursor), limit)
