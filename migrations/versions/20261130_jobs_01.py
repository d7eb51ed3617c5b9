"""chat: messages.client_id, one stored message per (ride, author, client_id)

Revision ID: 20261130_jobs_01
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_jobs_01"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("client_id", sa.String(length=64), nullable=True))
    op.create_index(
        "uq_messages_client_id",
        "messages",
        ["ride_id", "author_id", "client_id"],
        unique=True,
        postgresql_where=sa.text("client_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_messages_client_id", table_name="messages")
    op.drop_column("messages", "client_id")
