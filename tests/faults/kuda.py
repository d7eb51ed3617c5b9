"""Helpers for fault tests: `kuda serve` processes on test-owned services, a REST client, and a
subscriber that records every event it is delivered (to check nothing durable was lost)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import Account
from tests.procs import Server, kuda_env
from tests.services import JWT_SECRET

# Short database timeouts so a stalled PostgreSQL is answered in seconds (defaults: README).
FAULT_ENV = {
    "DB_CONNECT_TIMEOUT_S": "2",
    "DB_POOL_TIMEOUT_S": "2",
    "DB_STATEMENT_TIMEOUT_S": "3",
    "DB_COMMAND_TIMEOUT_S": "4",
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "1024",
    "RELAY_INTERVAL_S": "0.5",
    "RESYNC_INTERVAL_S": "1",
}
# A request must be answered well within this, whatever the fault (the bound the tests hold the
# server to; the figures measured are in docs/reliability.md).
REQUEST_BOUND_S = 30.0


async def start_kuda(
    tmp: Path, database_url: str, name: str = "kuda", redis_url: str | None = None, **env: str
) -> Server:
    values = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, **FAULT_ENV, **env}
    if redis_url is not None:
        values["REDIS_URL"] = redis_url
    server = Server(kuda_env(**values), tmp / f"{name}.log")
    await asyncio.to_thread(server.wait_ready)
    return server


def client(base_url: str, *, keepalive: bool = True) -> httpx.AsyncClient:
    """`keepalive=False` for request loops: a kept-alive connection that the server closes as
    idle just as the next request goes out is a transport error that says nothing about Kuda."""
    limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base_url, timeout=REQUEST_BOUND_S, limits=limits)


def departure(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def publish_ride(http: httpx.AsyncClient, driver: Account, **fields: Any) -> dict[str, Any]:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_at": departure(),
            "seats_total": 4, "price": 200, **fields}  # fmt: skip
    r = await http.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    ride: dict[str, Any] = r.json()
    return ride


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200
