"""jobs: ride_reminders (one per ride and user), indexes for housekeeping

Revision ID: 20261130_jobs_02
Revises: 20261130_alerts_01
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_jobs_02"
down_revision: str | None = "20261130_alerts_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ride_reminders",
        sa.Column(
            "ride_id",
            sa.BigInteger(),
            sa.ForeignKey("rides.id", ondelete="CASCADE", name="fk_ride_reminders_ride_id_rides"),
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.BigInteger(),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_ride_reminders_user_id_users"),
            nullable=False,
        ),
        sa.Column(
            "sent_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("ride_id", "user_id", name="pk_ride_reminders"),
    )
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])
    op.create_index(
        "ix_notifications_read_at",
        "notifications",
        ["read_at"],
        postgresql_where=sa.text("read_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_read_at", table_name="notifications")
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens")
    op.drop_table("ride_reminders")
