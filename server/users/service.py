from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from models import User
from server.errors import NotFound, ValidationFailed
from server.users import repository
from server.users.schemas import MePatch


async def public_profile(session: AsyncSession, user_id: int) -> User:
    user = await repository.get(session, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def update_me(session: AsyncSession, user: User, patch: MePatch) -> User:
    changes = patch.model_dump(exclude_unset=True)
    if changes.get("display_name", "") is None:
        raise ValidationFailed(
            "display_name cannot be null",
            details=[{"field": "body.display_name", "message": "may not be null"}],
        )
    for field, value in changes.items():
        setattr(user, field, value)
    await session.commit()
    await session.refresh(user)
    return user
