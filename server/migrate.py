"""Run Alembic from code: `kuda migrate`, the embedded start-up and the tests use this."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

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


def is_current(database_url: str) -> bool:
    """Whether the database is at the head revision (for a deployment that waits for its
    migration Job: `kuda migrate --check`)."""
    heads = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    return asyncio.run(_applied(database_url)) == heads


async def _applied(database_url: str) -> set[str]:
    plain = "postgresql://" + database_url.split("://", 1)[1]  # asyncpg reads libpq's sslmode
    conn = await asyncpg.connect(plain, timeout=10)
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return set()
    finally:
        await conn.close()
    return {row["version_num"] for row in rows}


def url_from_env() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    return url
