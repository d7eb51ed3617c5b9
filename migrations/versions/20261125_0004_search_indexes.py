"""search: denormalised driver rating on rides; indexes for the price and rating sorts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rides", sa.Column("driver_rating", sa.Float(), server_default="0", nullable=False)
    )
    op.execute(
        "UPDATE rides r SET driver_rating = u.rating_sum::float / u.rating_count "
        "FROM users u WHERE u.id = r.driver_id AND u.rating_count > 0"
    )
    op.create_index(
        "ix_rides_status_price",
        "rides",
        ["status", sa.text("COALESCE(price, 1000000000)"), "id"],
    )
    op.create_index(
        "ix_rides_status_rating", "rides", ["status", sa.text("driver_rating DESC"), "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_rides_status_rating", table_name="rides")
    op.drop_index("ix_rides_status_price", table_name="rides")
    op.drop_column("rides", "driver_rating")
