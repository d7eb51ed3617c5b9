"""Alembic migrations: the only thing that creates Kuda's schema."""
