from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.validation import Text

MAX_BODY = 2000


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Text = Field(min_length=1, max_length=MAX_BODY)


class MessageOut(BaseModel):
    id: int
    ride_id: int
    author_id: int
    body: str
    created_at: datetime


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None
