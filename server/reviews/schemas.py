from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.validation import BodyId, Text


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_id: BodyId
    stars: int = Field(ge=1, le=5)
    comment: Text | None = Field(default=None, max_length=2000)


class ReviewOut(BaseModel):
    id: int
    ride_id: int
    author_id: int
    target_id: int
    stars: int
    comment: str | None
    created_at: datetime


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    next_cursor: str | None
