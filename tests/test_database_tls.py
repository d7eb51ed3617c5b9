"""A libpq-style `sslmode=` in DATABASE_URL reaches asyncpg (as its `ssl=`): against the shared
test server, which has no TLS, `require` is refused with the server's own answer and `prefer`
connects, so the parameter is really passed through."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server.config import to_asyncpg_url
from tests import services


def test_sslmode_becomes_asyncpgs_ssl() -> None:
    url = "postgresql://u:p@db:5432/kuda?sslmode=verify-full&application_name=x"
    assert (
        to_asyncpg_url(url)
        == "postgresql+asyncpg://u:p@db:5432/kuda?ssl=verify-full&application_name=x"
    )
    assert to_asyncpg_url("postgres://db/kuda") == "postgresql+asyncpg://db/kuda"


async def _select_one(url: str) -> int:
    engine = create_async_engine(to_asyncpg_url(url))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT 1"))).scalar_one())
    finally:
        await engine.dispose()


async def test_sslmode_reaches_the_driver() -> None:
    with pytest.raises(Exception, match="rejected SSL upgrade"):
        await _select_one(services.ADMIN_URL + "?sslmode=require")
    assert await _select_one(services.ADMIN_URL + "?sslmode=prefer") == 1
