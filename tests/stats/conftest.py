from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import Account, signup

STATS = "/api/v1/admin/stats"
KEYS = {
    "sockets_open",
    "users_online",
    "rides_published_today",
    "seats_booked_today",
    "messages_today",
    "busiest_routes",
    "instances",
}


async def make_admin(client: httpx.AsyncClient, db_conn: Any) -> Account:
    admin = await signup(client, display_name="Admin Ada")
    await db_conn.execute("UPDATE users SET is_admin = true WHERE id = $1", admin.id)
    return admin


async def stats(client: httpx.AsyncClient, admin: Account) -> dict[str, Any]:
    r = await client.get(STATS, headers=admin.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == KEYS, body
    return body


@pytest.fixture
async def admin(client: httpx.AsyncClient, db_conn: Any) -> Account:
    return await make_admin(client, db_conn)
