from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from server.app import create_app
from server.config import Settings
from tests import services
from tests.helpers import assert_error, login, signup


@pytest.fixture(params=["memory", "redis"])
async def limited_client(
    request: pytest.FixtureRequest,
    settings_factory: Callable[..., Settings],
    redis: Redis,
    redis_prefix: str,
) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = services.REDIS_URL if request.param == "redis" else None
    settings = settings_factory(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        login_failures_per_email=3,
        auth_requests_per_ip=12,
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://kuda.test") as c:
            yield c


async def test_failed_logins_are_limited_per_email(limited_client: httpx.AsyncClient) -> None:
    victim = await signup(limited_client)
    other = await signup(limited_client)
    for _ in range(3):
        assert (await login(limited_client, victim.email, "wrong-password")).status_code == 401
    r = await login(limited_client, victim.email)  # even the right password waits
    error = assert_error(r, 429, "rate_limited")
    assert 0 < int(r.headers["retry-after"]) <= 15 * 60
    assert error["details"]["retry_after_s"] == int(r.headers["retry-after"])
    assert (await login(limited_client, other.email)).status_code == 200


async def test_auth_requests_are_limited_per_ip(limited_client: httpx.AsyncClient) -> None:
    statuses = []
    for i in range(14):
        form = {"username": f"nobody-{i}@example.com", "password": "p"}
        r = await limited_client.post("/api/v1/auth/token", data=form)
        statuses.append(r.status_code)
    assert statuses.count(429) == 2 and 429 not in statuses[:12]
    assert 0 < int(r.headers["retry-after"]) <= 60


async def test_redis_ip_limit_is_shared_between_instances(
    settings_factory: Callable[..., Settings], redis: Redis, redis_prefix: str
) -> None:
    settings = settings_factory(
        redis_url=services.REDIS_URL, redis_prefix=redis_prefix, auth_requests_per_ip=4
    )
    apps = [create_app(settings), create_app(settings)]
    async with LifespanManager(apps[0]), LifespanManager(apps[1]):
        a, b = (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=x), base_url="http://k")
            for x in apps
        )
        async with a, b:
            for client in (a, b, a, b):
                assert (await login(client, "nobody@example.com", "nope")).status_code == 401
            assert_error(await login(a, "nobody@example.com"), 429, "rate_limited")
            assert_error(await login(b, "nobody@example.com"), 429, "rate_limited")
    assert await redis.exists(f"{redis_prefix}rl:ip:127.0.0.1") == 1


async def test_concurrent_wrong_passwords_are_checked_at_most_the_limit(
    limited_client: httpx.AsyncClient,
) -> None:
    """Reserve, then verify: a burst never gets more checks than the limit (3 here)."""
    victim = await signup(limited_client)
    stranger = httpx.AsyncClient(transport=limited_client._transport, base_url="http://kuda.test")
    async with stranger:
        results = await asyncio.gather(
            *(login(stranger, victim.email, f"guess-{i}") for i in range(10))
        )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [401] * 3 + [429] * 7


async def test_a_stranger_cannot_lock_the_owner_out_of_a_known_device(
    limited_client: httpx.AsyncClient,
) -> None:
    owner = await signup(limited_client)  # limited_client now holds the device cookie
    assert limited_client.cookies.get("kuda_device")
    stranger = httpx.AsyncClient(transport=limited_client._transport, base_url="http://kuda.test")
    async with stranger:
        for _ in range(3):
            assert (await login(stranger, owner.email, "guess")).status_code == 401
        assert_error(await login(stranger, owner.email), 429, "rate_limited")
        # A cookie for another account proves nothing about this one.
        other = await signup(stranger)
        assert stranger.cookies.get("kuda_device")
        assert_error(await login(stranger, owner.email), 429, "rate_limited")
        assert other.id != owner.id
    r = await login(limited_client, owner.email)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/api/v1/auth" in cookie
    # The device has its own allowance (the same limit), and its own typos are checked.
    assert_error(await login(limited_client, owner.email, "typo"), 401, "unauthorized")
