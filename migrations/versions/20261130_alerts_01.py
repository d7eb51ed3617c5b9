"""alerts: saved searches and the (alert, ride) pairs already notified

Revision ID: 20261130_alerts_01
Revises: 20261130_stats_01
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_alerts_01"
down_revision: str | None = "20261130_stats_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(200), nullable=False),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("origin_key", sa.String(800), nullable=False),
        sa.Column("destination_key", sa.String(800), nullable=False),
        sa.Column("departure_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("departure_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_price", sa.Numeric(12, 2), nullable=True),
        sa.Column("min_seats", sa.SmallInteger(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "max_price IS NULL OR max_price >= 0", name=op.f("ck_alerts_max_price_nonneg")
        ),
        sa.CheckConstraint(
            "min_seats IS NULL OR min_seats >= 1", name=op.f("ck_alerts_min_seats_positive")
        ),
        sa.CheckConstraint(
            "departure_from IS NULL OR departure_to IS NULL OR departure_from <= departure_to",
            name=op.f("ck_alerts_window_ordered"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alerts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_user", "alerts", ["user_id", "id"])
    op.create_index("ix_alerts_route", "alerts", ["origin_key", "destination_key"])
    op.create_table(
        "alert_matches",
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("ride_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_matches_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ride_id"],
            ["rides.id"],
            name=op.f("fk_alert_matches_ride_id_rides"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alert_id", "ride_id", name=op.f("pk_alert_matches")),
    )
    op.create_index("ix_alert_matches_ride", "alert_matches", ["ride_id"])


def downgrade() -> None:
    op.drop_table("alert_matches")
    op.drop_table("alerts")
