"""perf: ride_places (every distinct lower-cased origin and destination) and route indexes

Substring place search first matches the typed text against the distinct place names (a small
table, trigram-indexed where pg_trgm exists), then searches rides by `lower(origin) = ANY(...)
AND lower(destination) = ANY(...)`, whose pair statistics PostgreSQL keeps (extended MCV
statistics), on a btree that serves rare routes directly (docs/decisions.md D38).

Revision ID: 20261130_perf_01
Revises: 20261130_jobs_02
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_perf_01"
down_revision: str | None = "20261130_jobs_02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# New names are inserted in sorted order, so two transactions adding the same two new places
# in opposite order cannot deadlock on them; names already there take no lock (DO NOTHING).
INSERT_FUNCTION = """
CREATE FUNCTION kuda_ride_places_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ride_places (name)
    SELECT p FROM (
        SELECT lower(origin) AS p FROM new_rides
        UNION SELECT lower(destination) FROM new_rides
    ) AS names ORDER BY p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$
"""
UPDATE_FUNCTION = """
CREATE FUNCTION kuda_ride_places_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ride_places (name)
    SELECT DISTINCT p FROM (VALUES (lower(NEW.origin)), (lower(NEW.destination))) AS v (p)
    ORDER BY p
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$
"""
INSERT_TRIGGER = """
CREATE TRIGGER ride_places_inserted AFTER INSERT ON rides
REFERENCING NEW TABLE AS new_rides FOR EACH STATEMENT
EXECUTE FUNCTION kuda_ride_places_inserted()
"""
UPDATE_TRIGGER = """
CREATE TRIGGER ride_places_updated AFTER UPDATE OF origin, destination ON rides
FOR EACH ROW WHEN (OLD.origin IS DISTINCT FROM NEW.origin
                   OR OLD.destination IS DISTINCT FROM NEW.destination)
EXECUTE FUNCTION kuda_ride_places_updated()
"""


def _has_trigrams() -> bool:
    """Migration 0003 created pg_trgm where the server has it and lets this role do it."""
    found = op.get_bind().execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))
    return found.first() is not None


def _server_version() -> int:
    return int(op.get_bind().execute(sa.text("SHOW server_version_num")).scalar_one())


def upgrade() -> None:
    op.create_table(
        "ride_places",
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ride_places")),
    )
    op.execute(
        "INSERT INTO ride_places (name) SELECT lower(origin) FROM rides "
        "UNION SELECT lower(destination) FROM rides"
    )
    if _has_trigrams():
        op.create_index(
            "ix_ride_places_trgm",
            "ride_places",
            [sa.text("name gin_trgm_ops")],
            postgresql_using="gin",
        )
    op.execute(INSERT_FUNCTION)
    op.execute(UPDATE_FUNCTION)
    op.execute(INSERT_TRIGGER)
    op.execute(UPDATE_TRIGGER)
    op.create_index(
        "ix_rides_route",
        "rides",
        ["status", sa.text("lower(origin)"), sa.text("lower(destination)"), "departure_at"],
    )
    op.create_index(
        "ix_rides_status_destination",
        "rides",
        ["status", sa.text("lower(destination)"), "departure_at"],
    )
    if _server_version() >= 140000:  # statistics on expressions: PostgreSQL 14
        op.execute(
            "CREATE STATISTICS st_rides_route (ndistinct, mcv) "
            "ON lower(origin), lower(destination) FROM rides"
        )
    op.execute("ANALYZE rides")
    op.execute("ANALYZE ride_places")


def downgrade() -> None:
    op.execute("DROP STATISTICS IF EXISTS st_rides_route")
    op.drop_index("ix_rides_status_destination", table_name="rides")
    op.drop_index("ix_rides_route", table_name="rides")
    op.execute("DROP TRIGGER ride_places_updated ON rides")
    op.execute("DROP TRIGGER ride_places_inserted ON rides")
    op.execute("DROP FUNCTION kuda_ride_places_updated()")
    op.execute("DROP FUNCTION kuda_ride_places_inserted()")
    op.drop_table("ride_places")
