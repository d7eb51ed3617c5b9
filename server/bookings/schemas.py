from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BookingStatus = Literal["pending", "confirmed", "rejected", "cancelled"]


class BookingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seats: int = Field(ge=1, le=8)


class BookingOut(BaseModel):
    id: int
    ride_id: int
    passenger_id: int
    seats: int
    status: BookingStatus
    cancelled_by: int | None
    created_at: datetime
    updated_at: datetime


class BookingPage(BaseModel):
    items: list[BookingOut]
    next_cursor: str | None
