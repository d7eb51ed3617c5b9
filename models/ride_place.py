from __future__ import annotations

from sqlalchemy import Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class RidePlace(Base):
    """Every distinct lower-cased origin and destination a ride ever had, kept by triggers on
    `rides` (migration 20261130_perf_01) in the transaction that writes the ride, so a search
    that sees a ride sees its places. Substring search matches the typed text here first
    (server/rides/search.py). Names are never removed: a stale one only matches no ride."""

    __tablename__ = "ride_places"
    __table_args__ = (
        # Only where pg_trgm exists (the migration skips it otherwise).
        Index("ix_ride_places_trgm", text("name gin_trgm_ops"), postgresql_using="gin"),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
