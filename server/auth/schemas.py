from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from server.validation import DisplayName, Text

PHONE_PATTERN = r"^\+?[0-9][0-9 ()-]{4,30}$"


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: Text = Field(min_length=8, max_length=128)
    display_name: DisplayName
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TicketOut(BaseModel):
    ticket: str
    expires_in: int
