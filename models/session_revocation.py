from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class SessionRevocation(Base):
    """A session that ended before its access tokens expire (logout, refresh reuse, password
    change, account deletion). `session_key` is the refresh-token family id (the `sid` claim),
    or `user:{id}` for a user's tokens issued before sessions had ids.

    Every instance mirrors the unexpired rows in memory (server/auth/sessions.py); a row is
    useless once `expires_at` (the revocation time plus the access token lifetime) has passed.
    """

    __tablename__ = "session_revocations"
    __table_args__ = (
        Index("ix_session_revocations_key", "session_key"),
        Index("ix_session_revocations_created_at", "created_at"),
        Index("ix_session_revocations_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    expires_at: Mapped[datetime]
