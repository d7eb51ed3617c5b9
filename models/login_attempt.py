from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class LoginAttempt(Base):
    """Password checks reserved in the current window of one bucket (an email, or an email on
    a known device). A check is reserved before the password is verified and released when it
    was right, so `used` counts wrong passwords plus checks in flight (docs/decisions.md D19)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_window_ends", "window_ends"),)

    bucket: Mapped[str] = mapped_column(String(400), primary_key=True)
    used: Mapped[int]
    window_ends: Mapped[datetime]
