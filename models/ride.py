from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Numeric,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin

RIDE_KINDS = ("ride", "taxi_share")
RIDE_STATUSES = ("scheduled", "started", "completed", "cancelled")


class Ride(CreatedAtMixin, Base):
    """A driver's ride, or a taxi_share group (the organiser takes no seat from the group).

    `seats_available` is kept by conditional updates (`seats_available >= n`) and bounded by
    a CHECK, so no race on any number of instances can overbook. `version` counts the
    driver's edits and status changes (If-Match / ETag)."""

    __tablename__ = "rides"
    __table_args__ = (
        CheckConstraint("seats_total BETWEEN 1 AND 8", name="seats_total_range"),
        CheckConstraint(
            "seats_available >= 0 AND seats_available <= seats_total", name="seats_available_range"
        ),
        CheckConstraint("kind IN ('ride', 'taxi_share')", name="kind_valid"),
        CheckConstraint(
            "status IN ('scheduled', 'started', 'completed', 'cancelled')", name="status_valid"
        ),
        CheckConstraint("price IS NULL OR price >= 0", name="price_nonneg"),
        CheckConstraint(
            "(origin_lat IS NULL) = (origin_lng IS NULL) "
            "AND (destination_lat IS NULL) = (destination_lng IS NULL)",
            name="points_complete",
        ),
        Index("ix_rides_status_departure", "status", "departure_at", "id"),
        Index("ix_rides_driver", "driver_id", "departure_at"),
        Index("ix_rides_created_at", "created_at"),  # the day's statistics
        Index("ix_rides_status_price", "status", text("COALESCE(price, 1000000000)"), "id"),
        Index("ix_rides_status_rating", "status", text("driver_rating DESC"), "id"),
        Index(
            "ix_rides_origin_trgm",
            text("lower(origin) gin_trgm_ops"),
            postgresql_using="gin",
        ),
        Index(
            "ix_rides_destination_trgm",
            text("lower(destination) gin_trgm_ops"),
            postgresql_using="gin",
        ),
        # Routes by exact (lower-cased) place: what substring search uses once the typed text
        # is matched against ride_places (migration 20261130_perf_01, with extended statistics
        # on the pair).
        Index(
            "ix_rides_route",
            "status",
            text("lower(origin)"),
            text("lower(destination)"),
            "departure_at",
        ),
        Index("ix_rides_status_destination", "status", text("lower(destination)"), "departure_at"),
        Index(
            "ix_rides_origin_point",
            "origin_lat",
            "origin_lng",
            postgresql_where=text("origin_lat IS NOT NULL"),
        ),
        Index(
            "ix_rides_destination_point",
            "destination_lat",
            "destination_lng",
            postgresql_where=text("destination_lat IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    driver_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), server_default="ride")
    origin: Mapped[str] = mapped_column(String(200))
    destination: Mapped[str] = mapped_column(String(200))
    origin_lat: Mapped[float | None] = mapped_column(Float)
    origin_lng: Mapped[float | None] = mapped_column(Float)
    destination_lat: Mapped[float | None] = mapped_column(Float)
    destination_lng: Mapped[float | None] = mapped_column(Float)
    departure_at: Mapped[datetime]
    seats_total: Mapped[int] = mapped_column(SmallInteger)
    seats_available: Mapped[int] = mapped_column(SmallInteger)
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    currency: Mapped[str] = mapped_column(String(3), server_default="RUB")
    notes: Mapped[str | None] = mapped_column(String(2000))
    instant_booking: Mapped[bool] = mapped_column(server_default="false")
    status: Mapped[str] = mapped_column(String(16), server_default="scheduled")
    version: Mapped[int] = mapped_column(server_default="1")
    # The driver's rating average, kept in step by each review's transaction so that sorting
    # and filtering by rating is an index scan (0 = not rated yet).
    driver_rating: Mapped[float] = mapped_column(Float, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
