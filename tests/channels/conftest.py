from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.config import Settings
from tests.helpers import Account, signup
from tests.live import LiveServer


@pytest.fixture
async def live_factory(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    servers: list[LiveServer] = []

    async def start(**overrides: Any) -> LiveServer:
        server = await LiveServer(settings_factory(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


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
