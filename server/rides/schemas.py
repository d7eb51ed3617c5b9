from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.validation import MAX_ADVANCE, Instant, Text

RideKind = Literal["ride", "taxi_share"]
RideStatus = Literal["scheduled", "started", "completed", "cancelled"]
Place = str


MAX_PRICE = 1_000_000
"""The most a seat may cost (a search's `max_price` above it filters nothing more)."""
MAX_SEARCH_PRICE = 1_000_000_000
"""The highest `max_price` a search or an alert accepts (above it: 422)."""


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


def _future(value: datetime | None) -> datetime | None:
    now = datetime.now(UTC)
    if value is not None and value <= now:
        raise ValueError("must be in the future")
    if value is not None and value > now + MAX_ADVANCE:
        raise ValueError(f"must be within {MAX_ADVANCE.days} days from now")
    return value


class _RideFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("departure_at", check_fields=False)
    @classmethod
    def _departure_in_future(cls, value: datetime | None) -> datetime | None:
        return _future(value)

    @field_validator("currency", check_fields=False)
    @classmethod
    def _currency_upper(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None


class RideIn(_RideFields):
    origin: Text = Field(min_length=1, max_length=200)
    destination: Text = Field(min_length=1, max_length=200)
    departure_at: Instant
    seats_total: int = Field(ge=1, le=8)
    price: Decimal | None = Field(default=None, ge=0, le=MAX_PRICE, decimal_places=2)
    currency: str = Field(default="RUB", pattern=r"^[A-Za-z]{3}$")
    notes: Text | None = Field(default=None, max_length=2000)
    kind: RideKind = "ride"
    instant_booking: bool = False
    origin_point: Point | None = None
    destination_point: Point | None = None


class RidePatch(_RideFields):
    origin: Text | None = Field(default=None, min_length=1, max_length=200)
    destination: Text | None = Field(default=None, min_length=1, max_length=200)
    departure_at: Instant | None = None
    seats_total: int | None = Field(default=None, ge=1, le=8)
    price: Decimal | None = Field(default=None, ge=0, le=MAX_PRICE, decimal_places=2)
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    notes: Text | None = Field(default=None, max_length=2000)
    instant_booking: bool | None = None
    origin_point: Point | None = None
    destination_point: Point | None = None


REQUIRED_ON_PATCH = (
    "origin",
    "destination",
    "departure_at",
    "seats_total",
    "currency",
    "instant_booking",
)


class DriverOut(BaseModel):
    id: int
    display_name: str
    is_verified: bool
    rating_avg: float | None
    rating_count: int


class RideOut(BaseModel):
    id: int
    driver_id: int
    driver: DriverOut | None
    kind: RideKind
    origin: str
    destination: str
    origin_point: Point | None
    destination_point: Point | None
    departure_at: datetime
    seats_total: int
    seats_available: int
    price: float | None
    currency: str
    notes: str | None
    instant_booking: bool
    status: RideStatus
    version: int
    created_at: datetime
    updated_at: datetime


class TaxiServiceOut(BaseModel):
    name: str
    phone: str
    url: str


class Suggestions(BaseModel):
    taxi_services: list[TaxiServiceOut]
    taxi_groups: list[RideOut]


class RidePage(BaseModel):
    items: list[RideOut]
    next_cursor: str | None
    suggestions: Suggestions | None = None
