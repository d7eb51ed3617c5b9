"""stats: created_at indexes on rides, bookings and messages (the day's counts)

Revision ID: 20261130_stats_01
Revises: 20261130_sessions_01
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261130_stats_01"
down_revision: str | None = "20261130_sessions_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_rides_created_at", "rides", ["created_at"])
    op.create_index(
        "ix_bookings_created_at",
        "bookings",
        ["created_at"],
        postgresql_include=["status", "seats"],
    )
    op.create_index("ix_messages_created_at", "messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at", table_name="messages")
    op.drop_index("ix_bookings_created_at", table_name="bookings")
    op.drop_index("ix_rides_created_at", table_name="rides")
