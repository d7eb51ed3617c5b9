from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from server.rides.schemas import MAX_SEARCH_PRICE
from server.validation import Instant, Text

MAX_PLACE = 200
"""Like a ride's origin and destination (and search's filters): a longer text matches nothing."""


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    origin: Text = Field(min_length=1, max_length=MAX_PLACE)
    destination: Text = Field(min_length=1, max_length=MAX_PLACE)
    departure_from: Instant | None = None
    departure_to: Instant | None = None
    max_price: Decimal | None = Field(default=None, ge=0, le=MAX_SEARCH_PRICE, decimal_places=2)
    min_seats: int | None = Field(default=None, ge=1, le=8)

    @field_validator("departure_to")
    @classmethod
    def _window_ordered(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("departure_from")
        if start is not None and end is not None and start > end:
            raise ValueError("must not be before departure_from")
        return end


class AlertOut(BaseModel):
    id: int
    origin: str
    destination: str
    departure_from: datetime | None
    departure_to: datetime | None
    max_price: float | None
    min_seats: int | None
    created_at: datetime


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None
