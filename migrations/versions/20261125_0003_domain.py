"""domain: rides, bookings, messages, reviews, notifications, idempotency keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _trigrams() -> bool:
    """pg_trgm where the server has it and lets this role create it (a trusted extension since
    PostgreSQL 13). Without it, substring search walks ix_rides_status_departure instead
    (docs/benchmarks.md, search)."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first():
        return True
    available = "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"
    if not bind.execute(sa.text(available)).first():
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:
        return False
    return True


def upgrade() -> None:
    # Trigram indexes serve case-insensitive substring search on origin/destination.
    trigrams = _trigrams()
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["user_id", "id"],
        unique=False,
        postgresql_where=sa.text("read_at IS NULL"),
    )
    op.create_index("ix_notifications_user", "notifications", ["user_id", "id"], unique=False)
    op.create_table(
        "rides",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("driver_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="ride", nullable=False),
        sa.Column("origin", sa.String(length=200), nullable=False),
        sa.Column("destination", sa.String(length=200), nullable=False),
        sa.Column("origin_lat", sa.Float(), nullable=True),
        sa.Column("origin_lng", sa.Float(), nullable=True),
        sa.Column("destination_lat", sa.Float(), nullable=True),
        sa.Column("destination_lng", sa.Float(), nullable=True),
        sa.Column("departure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seats_total", sa.SmallInteger(), nullable=False),
        sa.Column("seats_available", sa.SmallInteger(), nullable=False),
        sa.Column("price", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), server_default="RUB", nullable=False),
        sa.Column("notes", sa.String(length=2000), nullable=True),
        sa.Column("instant_booking", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="scheduled", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('ride', 'taxi_share')", name=op.f("ck_rides_kind_valid")),
        sa.CheckConstraint(
            "status IN ('scheduled', 'started', 'completed', 'cancelled')",
            name=op.f("ck_rides_status_valid"),
        ),
        sa.CheckConstraint(
            "(origin_lat IS NULL) = (origin_lng IS NULL) "
            "AND (destination_lat IS NULL) = (destination_lng IS NULL)",
            name=op.f("ck_rides_points_complete"),
        ),
        sa.CheckConstraint("price IS NULL OR price >= 0", name=op.f("ck_rides_price_nonneg")),
        sa.CheckConstraint(
            "seats_available >= 0 AND seats_available <= seats_total",
            name=op.f("ck_rides_seats_available_range"),
        ),
        sa.CheckConstraint("seats_total BETWEEN 1 AND 8", name=op.f("ck_rides_seats_total_range")),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["users.id"], name=op.f("fk_rides_driver_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rides")),
    )
    op.create_index(
        "ix_rides_destination_point",
        "rides",
        ["destination_lat", "destination_lng"],
        unique=False,
        postgresql_where=sa.text("destination_lat IS NOT NULL"),
    )
    if trigrams:
        op.create_index(
            "ix_rides_destination_trgm",
            "rides",
            [sa.text("lower(destination) gin_trgm_ops")],
            unique=False,
            postgresql_using="gin",
        )
    op.create_index("ix_rides_driver", "rides", ["driver_id", "departure_at"], unique=False)
    op.create_index(
        "ix_rides_origin_point",
        "rides",
        ["origin_lat", "origin_lng"],
        unique=False,
        postgresql_where=sa.text("origin_lat IS NOT NULL"),
    )
    if trigrams:
        op.create_index(
            "ix_rides_origin_trgm",
            "rides",
            [sa.text("lower(origin) gin_trgm_ops")],
            unique=False,
            postgresql_using="gin",
        )
    op.create_index(
        "ix_rides_status_departure", "rides", ["status", "departure_at", "id"], unique=False
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("ride_id", sa.BigInteger(), nullable=False),
        sa.Column("passenger_id", sa.BigInteger(), nullable=False),
        sa.Column("seats", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancelled_by", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'rejected', 'cancelled')",
            name=op.f("ck_bookings_status_valid"),
        ),
        sa.CheckConstraint("seats BETWEEN 1 AND 8", name=op.f("ck_bookings_seats_range")),
        sa.ForeignKeyConstraint(
            ["passenger_id"],
            ["users.id"],
            name=op.f("fk_bookings_passenger_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ride_id"], ["rides.id"], name=op.f("fk_bookings_ride_id_rides"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index("ix_bookings_passenger", "bookings", ["passenger_id", "id"], unique=False)
    op.create_index("ix_bookings_ride", "bookings", ["ride_id", "id"], unique=False)
    op.create_index(
        "uq_bookings_active_passenger",
        "bookings",
        ["ride_id", "passenger_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'confirmed')"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("ride_id", sa.BigInteger(), nullable=False),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.String(length=2000), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(body) BETWEEN 1 AND 2000", name=op.f("ck_messages_body_length")
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_messages_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ride_id"], ["rides.id"], name=op.f("fk_messages_ride_id_rides"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index("ix_messages_ride", "messages", ["ride_id", "id"], unique=False)
    op.create_table(
        "reviews",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("ride_id", sa.BigInteger(), nullable=False),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=False),
        sa.Column("stars", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.String(length=2000), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("author_id <> target_id", name=op.f("ck_reviews_not_self")),
        sa.CheckConstraint("stars BETWEEN 1 AND 5", name=op.f("ck_reviews_stars_range")),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_reviews_author_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["ride_id"], ["rides.id"], name=op.f("fk_reviews_ride_id_rides"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["users.id"], name=op.f("fk_reviews_target_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index("ix_reviews_target", "reviews", ["target_id", "id"], unique=False)
    op.create_index(
        "uq_reviews_ride_author_target",
        "reviews",
        ["ride_id", "author_id", "target_id"],
        unique=True,
    )


def downgrade() -> None:
    for table in ("reviews", "messages", "bookings", "rides", "notifications", "idempotency_keys"):
        op.drop_table(table)
