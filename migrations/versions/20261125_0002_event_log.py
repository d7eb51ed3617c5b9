"""event log: per-channel sequences, events (outbox), revocations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now() -> sa.Column[sa.DateTime]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "channel_seqs",
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("trimmed_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("acl_version", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("channel", name="pk_channel_seqs"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column("acl_version", sa.Integer(), server_default="0", nullable=False),
        _now(),
        sa.Column("published", sa.Boolean(), server_default="false", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("channel", "seq", name="uq_events_channel_seq"),
    )
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index(
        "ix_events_unpublished", "events", ["id"], postgresql_where=sa.text("NOT published")
    )
    op.create_table(
        "channel_revocations",
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("acl_version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        _now(),
        sa.PrimaryKeyConstraint("channel", "acl_version", name="pk_channel_revocations"),
    )


def downgrade() -> None:
    op.drop_table("channel_revocations")
    op.drop_table("events")
    op.drop_table("channel_seqs")
