"""Jobs run against the real database with an injected `now`: the app's own runner is off
(JOBS_ENABLED=false) so each test runs the job functions itself, at the instants it chooses."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.config import Settings
from tests.helpers import Account, signup


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(jobs_enabled=False)


@pytest.fixture
def maker(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    """The app's sessionmaker: what jobs append is published as in `kuda serve`."""
    sessionmaker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    return sessionmaker


@pytest.fixture
async def pg(db: str) -> Any:
    conn = await asyncpg.connect(db)
    yield conn
    await conn.close()


@pytest.fixture
async def driver(client: httpx.AsyncClient) -> Account:
    return await signup(client, display_name="Driver Dina")


@pytest.fixture
async def riders(client: httpx.AsyncClient) -> list[Account]:
    return [await signup(client, display_name=f"Rider {i}") for i in range(3)]


async def publish(
    client: httpx.AsyncClient, driver: Account, departure: datetime, **fields: Any
) -> dict[str, Any]:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_at": departure.isoformat(),
            "seats_total": 4, "price": 250, "instant_booking": True, **fields}  # fmt: skip
    r = await client.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    ride: dict[str, Any] = r.json()
    return ride


async def book(client: httpx.AsyncClient, rider: Account, ride_id: int) -> dict[str, Any]:
    r = await client.post(
        f"/api/v1/rides/{ride_id}/bookings", json={"seats": 1}, headers=rider.headers
    )
    assert r.status_code == 201, r.text
    booking: dict[str, Any] = r.json()
    return booking


async def notes(pg: asyncpg.Connection, kind: str) -> list[tuple[int, dict[str, Any]]]:
    """(user_id, data) of every stored notification of `kind`."""
    rows = await pg.fetch(
        "SELECT user_id, data::text AS data FROM notifications WHERE kind = $1 ORDER BY id", kind
    )
    return [(r["user_id"], json.loads(r["data"])) for r in rows]


async def pushed(pg: asyncpg.Connection, channel: str, kind: str) -> int:
    """How many `notification.created` events of `kind` were appended to `channel`."""
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM events WHERE channel = $1 AND event = 'notification.created' "
            "AND data->>'kind' = $2",
            channel,
            kind,
        )
    )
