from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin

BOOKING_STATUSES = ("pending", "confirmed", "rejected", "cancelled")
ACTIVE = ("pending", "confirmed")


class Booking(CreatedAtMixin, Base):
    """A passenger's request for seats. At most one active (pending or confirmed) booking per
    passenger per ride, enforced by a partial unique index."""

    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("seats BETWEEN 1 AND 8", name="seats_range"),
        CheckConstraint(
            "status IN ('pending', 'confirmed', 'rejected', 'cancelled')", name="status_valid"
        ),
        Index(
            "uq_bookings_active_passenger",
            "ride_id",
            "passenger_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'confirmed')"),
        ),
        Index("ix_bookings_ride", "ride_id", "id"),
        Index("ix_bookings_passenger", "passenger_id", "id"),
        # The day's statistics: an index-only scan (seats and status ride along).
        Index("ix_bookings_created_at", "created_at", postgresql_include=["status", "seats"]),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ride_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("rides.id", ondelete="CASCADE"))
    passenger_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE")
    )
    seats: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(16))
    cancelled_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
