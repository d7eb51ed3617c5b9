"""Login holds no database connection while Argon2 runs (issue 8: 150 concurrent bad logins
left connections idle in transaction and slowed unrelated reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from tests.helpers import signup
from tests.live import LiveServer

IDLE_LOGINS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'idle in transaction'
  AND query ILIKE '%lower(users.email)%'
"""


async def test_bad_logins_hold_no_connection_while_hashing(
    live_factory: Callable[..., Any], db: str
) -> None:
    server: LiveServer = await live_factory(
        password_hash_time_cost=2,
        password_hash_memory_kib=8192,  # slow enough to be seen, cheap enough for CI
        auth_requests_per_ip=10_000,
    )
    async with httpx.AsyncClient(base_url=server.http, timeout=120) as http:
        account = await signup(http)
        body = {"origin": "Innopolis", "destination": "Kazan", "seats_total": 2,
                "departure_at": "2099-01-01T10:00:00Z"}  # fmt: skip
        ride = (await http.post("/api/v1/rides", json=body, headers=account.headers)).json()
        monitor = await asyncpg.connect(db)
        seen: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                seen.append(int(await monitor.fetchval(IDLE_LOGINS)))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        try:
            logins = [
                http.post(
                    "/api/v1/auth/token",
                    data={"username": f"nobody-{i}@example.com", "password": "wrong-password"},
                )
                for i in range(150)
            ]
            burst = asyncio.gather(*logins)
            await asyncio.sleep(0.2)
            read = await http.get(f"/api/v1/rides/{ride['id']}", headers=account.headers)
            results = await burst
        finally:
            done.set()
            await sampler
            await monitor.close()
    assert read.status_code == 200
    assert sorted({r.status_code for r in results}) == [401]
    assert len(seen) > 10  # the sampler ran during the burst
    assert max(seen) == 0, f"connections idle in transaction during logins: {max(seen)}"
