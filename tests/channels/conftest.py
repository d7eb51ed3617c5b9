from __future__ import annotations

import httpx
import pytest

from tests.helpers import Account, signup


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await signup(http)


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> Account:
    return await signup(http)
