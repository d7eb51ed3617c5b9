from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import User
from server.cache import Cache, profile_key
from server.db import commit, on_commit
from server.errors import NotFound, ValidationFailed
from server.users import repository
from server.users.schemas import MePatch, PublicUser


def public_view(user: User) -> dict[str, Any]:
    return PublicUser.model_validate(user).model_dump(mode="json")


async def public_profile(session: AsyncSession, cache: Cache, user_id: int) -> dict[str, Any]:
    async def load() -> dict[str, Any] | None:
        user = await repository.get(session, user_id)
        return None if user is None else public_view(user)

    profile = await cache.get_or_load(profile_key(user_id), load)
    if profile is None:
        raise NotFound("User not found")
    return profile


async def update_me(session: AsyncSession, cache: Cache, user: User, patch: MePatch) -> User:
    changes = patch.model_dump(exclude_unset=True)
    if changes.get("display_name", "") is None:
        raise ValidationFailed(
            "display_name cannot be null",
            details=[{"field": "body.display_name", "message": "may not be null"}],
        )
    for field, value in changes.items():
        setattr(user, field, value)
    on_commit(session, lambda: cache.invalidate(profile_key(user.id)))
    await commit(session)
    await session.refresh(user)
    return user
