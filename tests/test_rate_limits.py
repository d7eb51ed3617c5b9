from __future__ import annotations

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


async def test_redis_limits_are_shared_between_instances(
    settings_factory: Callable[..., Settings], redis: Redis, redis_prefix: str
) -> None:
    settings = settings_factory(
        redis_url=services.REDIS_URL, redis_prefix=redis_prefix, login_failures_per_email=2
    )
    apps = [create_app(settings), create_app(settings)]
    async with LifespanManager(apps[0]), LifespanManager(apps[1]):
        a, b = (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=x), base_url="http://k")
            for x in apps
        )
        async with a, b:
            account = await signup(a)
            assert (await login(a, account.email, "nope-nope")).status_code == 401
            assert (await login(b, account.email, "nope-nope")).status_code == 401
            assert_error(await login(a, account.email), 429, "rate_limited")
            assert_error(await login(b, account.email), 429, "rate_limited")
    assert await redis.exists(f"{redis_prefix}rl:login:{account.email}") == 1
