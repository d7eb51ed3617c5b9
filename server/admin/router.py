from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.cache import profile_key
from server.db import commit, on_commit
from server.deps import AdminUser, CacheDep, SessionDep
from server.errors import NotFound
from server.users import repository
from server.users.schemas import PublicUser
from server.users.service import public_view
from server.validation import PathId

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/users/{user_id}/verify", response_model=PublicUser)
async def verify_user(
    user_id: PathId, _: AdminUser, session: SessionDep, cache: CacheDep
) -> dict[str, Any]:
    """Mark a user as a verified driver (REQUIRE_VERIFIED_DRIVERS)."""
    user = await repository.get(session, user_id)
    if user is None:
        raise NotFound("User not found")
    user.is_verified = True
    on_commit(session, lambda: cache.invalidate(profile_key(user_id)))
    await commit(session)
    return public_view(user)
