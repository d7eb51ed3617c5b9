"""sessions: revoked sessions, login attempt reservations, deleted accounts

Revision ID: 20261130_sessions_01
Revises: 20261130_jobs_01
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_sessions_01"
down_revision: str | None = "20261130_jobs_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_revocations",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_session_revocations"),
    )
    op.create_index("ix_session_revocations_key", "session_revocations", ["session_key"])
    op.create_index("ix_session_revocations_created_at", "session_revocations", ["created_at"])
    op.create_index("ix_session_revocations_expires_at", "session_revocations", ["expires_at"])
    op.create_table(
        "login_attempts",
        sa.Column("bucket", sa.String(400), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("window_ends", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name="pk_login_attempts"),
    )
    op.create_index("ix_login_attempts_window_ends", "login_attempts", ["window_ends"])
    op.add_column("users", sa.Column("deleted_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("users", "deleted_at")
    op.drop_table("login_attempts")
    op.drop_table("session_revocations")
