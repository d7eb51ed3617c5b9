"""`GET /api/v1/admin/stats` holds one pooled connection per request: it answers on a pool of
one (the administrator check reads the account in the route's own session)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from server.config import Settings
from tests.helpers import Account
from tests.stats.conftest import stats


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=1)


async def test_answers_on_a_pool_of_one_connection(
    client: httpx.AsyncClient, admin: Account
) -> None:
    body = await stats(client, admin)
    assert body["instances"] == 1
