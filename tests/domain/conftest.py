from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.helpers import Account, signup


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
