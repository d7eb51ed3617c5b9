from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin


class RefreshToken(CreatedAtMixin, Base):
    """One issued refresh token. Tokens rotated from one login share a `family_id`.

    `used_at` is set when the token is exchanged; presenting a used token again is
    reuse, and revokes the whole family.
    """

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family", "family_id"),
        Index("ix_refresh_tokens_expires_at", "expires_at"),  # housekeeping (server/jobs)
    )

    jti: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
