from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.auth.schemas import PHONE_PATTERN
from server.validation import DisplayName, Text


class PublicUser(BaseModel):
    """What anyone signed in may see: never email, phone or password data."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    display_name: str
    bio: str | None
    is_verified: bool
    rating_avg: float | None
    rating_count: int


class Me(PublicUser):
    email: str
    phone: str | None
    is_admin: bool
    created_at: datetime


class MePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)
    bio: Text | None = Field(default=None, max_length=1000)


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Text = Field(min_length=1, max_length=128)
    new_password: Text = Field(min_length=8, max_length=128)


class AccountDeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Text = Field(min_length=1, max_length=128)
