"""alerts: one index per key (matching looks up the shorter of a ride's two texts)

Revision ID: 20261130_alerts_02
Revises: 20261130_perf_01
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261130_alerts_02"
down_revision: str | None = "20261130_perf_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_alerts_route", table_name="alerts")
    op.create_index("ix_alerts_origin_key", "alerts", ["origin_key"])
    op.create_index("ix_alerts_destination_key", "alerts", ["destination_key"])


def downgrade() -> None:
    op.drop_index("ix_alerts_destination_key", table_name="alerts")
    op.drop_index("ix_alerts_origin_key", table_name="alerts")
    op.create_index("ix_alerts_route", "alerts", ["origin_key", "destination_key"])
