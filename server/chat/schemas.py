from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.validation import Text

MAX_BODY = 2000
MAX_CLIENT_ID = 64


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Text = Field(min_length=1, max_length=MAX_BODY)
    client_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CLIENT_ID,
        description="the author's id for this message: a retry with the same one is stored once",
    )


class MessageOut(BaseModel):
    id: int
    ride_id: int
    author_id: int
    body: str
    client_id: str | None = Field(default=None, description="present when the author sent one")
    created_at: datetime


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None
