"""Fault tests run against real processes they own: a PostgreSQL cluster (tests/pg_server.py),
a redis-server (tests/redis_server.py) and `kuda serve` instances, never the shared services."""

from __future__ import annotations

import asyncio
import atexit
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from server import migrate
from tests.pg_server import PostgresServer


@pytest.fixture(scope="session")
async def pg_template() -> AsyncIterator[Path]:
    """An initialised cluster with the `kuda` database migrated, copied for each test."""
    server = await asyncio.to_thread(lambda: PostgresServer().init().start())
    try:
        conn = await asyncpg.connect(server.admin_url)
        try:
            await conn.execute("CREATE DATABASE kuda")
        finally:
            await conn.close()
        await asyncio.to_thread(migrate.upgrade, server.url("kuda"))
        template = await asyncio.to_thread(server.snapshot)
    finally:
        await asyncio.to_thread(server.destroy)
    # Removed at exit too: a session-scoped teardown does not run when the run is interrupted.
    atexit.register(shutil.rmtree, template.parent, True)
    yield template
    shutil.rmtree(template.parent, ignore_errors=True)


@pytest.fixture
def pg(pg_template: Path) -> Iterator[PostgresServer]:
    """A test-owned PostgreSQL (database `kuda`, migrated) that the test may stop or stall."""
    server = PostgresServer(pg_template).init().start()
    yield server
    server.destroy()
