from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Account, signup
from tests.procs import Server, kuda_env
from tests.services import JWT_SECRET


def future(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def make_ride(client: httpx.AsyncClient, driver: Account, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "origin": "Innopolis",
        "destination": "Kazan",
        "departure_at": future(),
        "seats_total": 3,
        "price": 250,
    }
    body.update(fields)
    r = await client.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    ride: dict[str, Any] = r.json()
    return ride


async def book(
    client: httpx.AsyncClient, passenger: Account, ride_id: int, seats: int = 1
) -> httpx.Response:
    return await client.post(
        f"/api/v1/rides/{ride_id}/bookings", json={"seats": seats}, headers=passenger.headers
    )


@pytest.fixture
async def driver(client: httpx.AsyncClient) -> Account:
    return await signup(client, display_name="Driver Dina")


@pytest.fixture
async def passenger(client: httpx.AsyncClient) -> Account:
    return await signup(client, display_name="Passenger Pavel")


@pytest.fixture
async def stranger(client: httpx.AsyncClient) -> Account:
    return await signup(client, display_name="Stranger Stas")


@pytest.fixture
async def instances(db: str, tmp_path: Path) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two `kuda serve` processes on the test database (no Redis), each behind a client; the
    test fails if either logged a traceback."""
    env = kuda_env(DATABASE_URL=db, JWT_SECRET=JWT_SECRET, PASSWORD_HASH_TIME_COST="1",
                   PASSWORD_HASH_MEMORY_KIB="1024", DB_POOL_SIZE="8")  # fmt: skip
    servers = [Server(env, tmp_path / f"{name}.log") for name in ("a", "b")]
    try:
        for server in servers:
            await asyncio.to_thread(server.wait_ready)
        clients = [httpx.AsyncClient(base_url=s.base_url, timeout=60) for s in servers]
        yield clients
        for c in clients:
            await c.aclose()
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert "Traceback" not in server.log(), server.log()
