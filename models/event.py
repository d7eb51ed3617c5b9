from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class ChannelSeq(Base):
    """Per-channel counters. Appending locks this row until commit: that is what makes `seq`
    gapless and in commit order. `trimmed_seq` is the highest seq removed by retention;
    `acl_version` counts revocations (channel_revocations)."""

    __tablename__ = "channel_seqs"

    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    trimmed_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    acl_version: Mapped[int] = mapped_column(Integer, server_default="0")


class Event(Base):
    """The durable event log (transactional outbox). `published` is set once the event has been
    handed to the broker; the relay publishes committed rows that never were."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("channel", "seq", name="uq_events_channel_seq"),
        Index("ix_events_created_at", "created_at"),
        Index("ix_events_unpublished", "id", postgresql_where=text("NOT published")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    acl_version: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    published: Mapped[bool] = mapped_column(server_default="false")


class ChannelRevocation(Base):
    """A user lost the right to read a channel at `acl_version` (e.g. booking cancelled)."""

    __tablename__ = "channel_revocations"

    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    acl_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
