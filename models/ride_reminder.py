from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class RideReminder(Base):
    """A `ride.reminder` that was sent: one row per (ride, user), written in the transaction
    that stores and pushes the notification, so a second delivery is impossible whatever the
    number of instances (the primary key refuses it) and a crash before commit sends nothing."""

    __tablename__ = "ride_reminders"

    ride_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("rides.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    sent_at: Mapped[datetime] = mapped_column(server_default=func.now())
