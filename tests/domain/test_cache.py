"""Ride detail and profiles are cached in Redis and never stale after a write, on any instance."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from server.app import create_app
from server.cache import RedisCache
from server.config import Settings
from tests import services
from tests.domain.conftest import book, make_ride
from tests.helpers import signup


@pytest.fixture
async def pair(
    settings_factory: Callable[..., Settings], redis: Redis, redis_prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = settings_factory(redis_url=services.REDIS_URL, redis_prefix=redis_prefix)
    apps = [create_app(settings), create_app(settings)]
    async with LifespanManager(apps[0]), LifespanManager(apps[1]):
        a, b = (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=x), base_url="http://k")
            for x in apps
        )
        async with a, b:
            yield a, b


async def test_ride_detail_is_cached_and_fresh_after_writes_on_another_instance(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], redis: Redis, redis_prefix: str
) -> None:
    a, b = pair
    driver, passenger = await signup(a), await signup(a)
    ride = await make_ride(a, driver, seats_total=3, instant_booking=True)
    url = f"/api/v1/rides/{ride['id']}"
    assert (await b.get(url, headers=passenger.headers)).json()["notes"] is None
    assert await redis.exists(f"{redis_prefix}cache:ride:{ride['id']}") == 1
    await a.patch(url, json={"notes": "Meet at the university"}, headers=driver.headers)
    assert (await b.get(url, headers=passenger.headers)).json()["notes"] == "Meet at the university"
    await book(a, passenger, ride["id"], seats=2)
    fresh = (await b.get(url, headers=passenger.headers)).json()
    assert fresh["seats_available"] == 1 and fresh["version"] == 2


async def test_profile_is_fresh_after_patch_and_review(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], db_conn: Any
) -> None:
    a, b = pair
    alice, bob = await signup(a), await signup(a)
    url = f"/api/v1/users/{alice.id}"
    assert (await b.get(url, headers=bob.headers)).json()["bio"] is None
    await a.patch("/api/v1/users/me", json={"bio": "Daily commuter"}, headers=alice.headers)
    assert (await b.get(url, headers=bob.headers)).json()["bio"] == "Daily commuter"
    ride = await make_ride(a, alice, instant_booking=True)
    await book(a, bob, ride["id"])
    await a.post(f"/api/v1/rides/{ride['id']}/start", headers=alice.headers)
    await a.post(f"/api/v1/rides/{ride['id']}/complete", headers=alice.headers)
    r = await a.post(
        f"/api/v1/rides/{ride['id']}/reviews",
        json={"target_id": alice.id, "stars": 4},
        headers=bob.headers,
    )
    assert r.status_code == 201
    profile = (await b.get(url, headers=bob.headers)).json()
    assert profile["rating_count"] == 1 and profile["rating_avg"] == 4.0
    detail = (await b.get(f"/api/v1/rides/{ride['id']}", headers=bob.headers)).json()
    assert detail["driver"]["rating_avg"] == 4.0


async def test_a_reader_racing_a_writer_never_stores_the_old_value(
    redis: Redis, redis_prefix: str
) -> None:
    cache = RedisCache(redis, redis_prefix)
    state = {"value": "old"}

    async def slow_reader() -> dict[str, Any]:
        seen = dict(state)  # read from the "database" before the write commits...
        state["value"] = "new"  # ...the writer commits and invalidates meanwhile
        await cache.invalidate("thing")
        return seen

    assert await cache.get_or_load("thing", slow_reader) == {"value": "old"}
    assert await redis.exists(f"{redis_prefix}cache:thing") == 0

    async def reader() -> dict[str, Any]:
        return dict(state)

    assert await cache.get_or_load("thing", reader) == {"value": "new"}
    assert await cache.get_or_load("thing", reader) == {"value": "new"}
    assert cache.hits == 1
