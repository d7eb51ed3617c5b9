"""Run Alembic from code: `kuda migrate`, the embedded start-up and the tests use this."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from server.config import to_asyncpg_url

SCRIPT_LOCATION = Path(migrations.__file__).parent


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("sqlalchemy.url", to_asyncpg_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`; idempotent. Blocking: call from a thread in async code."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def url_from_env() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    return url
