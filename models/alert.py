from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Numeric, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin


class Alert(CreatedAtMixin, Base):
    """A saved search: its owner hears (`ride.matched`) about each ride published or changed so
    that it matches. `origin_key`/`destination_key` hold the lowered texts that matching looks
    up by equality against the substrings of a ride's lowered text (docs/decisions.md D34)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("max_price IS NULL OR max_price >= 0", name="max_price_nonneg"),
        CheckConstraint("min_seats IS NULL OR min_seats >= 1", name="min_seats_positive"),
        CheckConstraint(
            "departure_from IS NULL OR departure_to IS NULL OR departure_from <= departure_to",
            name="window_ordered",
        ),
        Index("ix_alerts_user", "user_id", "id"),
        Index("ix_alerts_origin_key", "origin_key"),
        Index("ix_alerts_destination_key", "destination_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    origin: Mapped[str] = mapped_column(String(200))
    destination: Mapped[str] = mapped_column(String(200))
    origin_key: Mapped[str] = mapped_column(String(800))
    destination_key: Mapped[str] = mapped_column(String(800))
    departure_from: Mapped[datetime | None]
    departure_to: Mapped[datetime | None]
    max_price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    min_seats: Mapped[int | None] = mapped_column(SmallInteger)


class AlertMatch(CreatedAtMixin, Base):
    """One row per (alert, ride) that was ever notified: the primary key makes a second
    `ride.matched` for the pair impossible, whatever the instances, edits and retries."""

    __tablename__ = "alert_matches"
    __table_args__ = (Index("ix_alert_matches_ride", "ride_id"),)

    alert_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True
    )
    ride_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("rides.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
