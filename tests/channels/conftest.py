from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.helpers import Account, signup
from tests.live import LiveServer


@pytest.fixture
async def live(live_factory: Callable[..., Any]) -> LiveServer:
    server: LiveServer = await live_factory()
    return server


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.http) as client:
        yield client


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    return await signup(http)


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> Account:
    return await signup(http)
