from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin


class Message(CreatedAtMixin, Base):
    """A ride chat message. `client_id` is the author's own id for it: a retried send with the
    same one finds the first message (unique per ride and author)."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("char_length(body) BETWEEN 1 AND 2000", name="body_length"),
        Index("ix_messages_ride", "ride_id", "id"),
        Index("ix_messages_created_at", "created_at"),  # the day's statistics
        Index(
            "uq_messages_client_id",
            "ride_id",
            "author_id",
            "client_id",
            unique=True,
            postgresql_where=text("client_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ride_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("rides.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(String(2000))
    client_id: Mapped[str | None] = mapped_column(String(64))
