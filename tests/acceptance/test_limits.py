"""PROTOCOL.md section 6, "Limits per user", on two instances started with small limits (and
the default write limit on the shared pair)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from tests.acceptance.conftest import Deployment, deployment
from tests.domain.conftest import book, make_ride
from tests.faults.kuda import wait_until
from tests.helpers import assert_error, login, signup
from tests.live import ws_connect
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

WRITES = 4
SOCKETS = 2
FAILURES = 3
LOGIN_WINDOW_S = 15 * 60
Post = Callable[[], Awaitable[httpx.Response]]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this module's own: the last test makes it slow, then stops and restarts it."""
    server = RedisServer().start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    server.kill()


@pytest.fixture(scope="module")
async def limited(
    database_url: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """`a` and `b` with small limits, and `unlimited` with `WRITE_RATE_PER_USER=0`."""
    env = {
        "WRITE_RATE_PER_USER": str(WRITES),
        "SOCKETS_PER_USER": str(SOCKETS),
        "LOGIN_FAILURES_PER_EMAIL": str(FAILURES),
        "AUTH_REQUESTS_PER_IP": "100000",
        "DRAIN_S": "0",
    }
    tmp = tmp_path_factory.mktemp("limits")
    extra = {"unlimited": {"WRITE_RATE_PER_USER": "0"}}
    async with deployment(database_url, tmp, redis_server.url, extra, **env) as d:
        yield d


@pytest.fixture
async def a(limited: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.a.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def b(limited: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.b.base_url, timeout=30) as http:
        yield http


def assert_rate_limited(response: httpx.Response, window_s: int = 60) -> None:
    """429 in the contract's error shape, with `Retry-After` in whole seconds (at most the
    limit's window)."""
    assert_error(response, 429, "rate_limited")
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= window_s, response.headers


def assert_refused_429(refused: InvalidStatus) -> None:
    """A refused handshake: 429 with `Retry-After` and the contract's error shape."""
    response = refused.response
    assert response.status_code == 429
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, response.headers
    body = orjson.loads(response.body or b"{}")
    assert set(body) == {"error"} and body["error"]["code"] == "rate_limited", body
    assert body["error"]["message"]


async def assert_budget(posts: list[Post], already: int = 0) -> None:
    """The user's creating POSTs pass until `WRITES` (counting `already`), then get 429."""
    for number, post in enumerate(posts, start=already + 1):
        r = await post()
        if number <= WRITES:
            assert r.status_code != 429, (number, r.text)
        else:
            assert_rate_limited(r)


def soon(hours: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def ride_body(n: int) -> dict[str, object]:
    return {"origin": "Innopolis", "destination": "Kazan", "departure_at": soon(24 + n),
            "seats_total": 3, "price": 100}  # fmt: skip


async def test_creating_rides_beyond_the_write_rate_is_429_across_instances(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    clients = itertools.cycle((a, b))
    posts: list[Post] = [
        lambda n=n, http=next(clients): http.post(
            "/api/v1/rides", json=ride_body(n), headers=driver.headers
        )
        for n in range(WRITES + 2)
    ]
    await assert_budget(posts)


async def test_creating_bookings_beyond_the_write_rate_is_429_across_instances(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    drivers = [await signup(a) for _ in range(3)]
    rides = [await make_ride(a, d, departure_at=soon(24 + i)) for i, d in enumerate(drivers * 2)]
    passenger = await signup(b)
    clients = itertools.cycle((b, a))
    posts: list[Post] = [
        lambda ride=ride, http=next(clients): book(http, passenger, ride["id"])
        for ride in rides[: WRITES + 1]
    ]
    await assert_budget(posts)


async def test_posting_messages_beyond_the_write_rate_is_429_across_instances(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver)
    clients = itertools.cycle((a, b))
    posts: list[Post] = [
        lambda n=n, http=next(clients): http.post(
            f"/api/v1/rides/{ride['id']}/messages", json={"body": f"m{n}"}, headers=driver.headers
        )
        for n in range(WRITES + 1)
    ]
    await assert_budget(posts, already=1)


async def test_posting_reviews_beyond_the_write_rate_is_429_across_instances(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver, departure_at=soon(1), seats_total=4)
    passengers = [await signup(b) for _ in range(4)]
    for p in passengers:
        booking = (await book(b, p, ride["id"])).json()
        confirmed = await a.post(
            f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers
        )
        assert confirmed.status_code == 200, confirmed.text
    for action in ("start", "complete"):
        r = await a.post(f"/api/v1/rides/{ride['id']}/{action}", headers=driver.headers)
        assert r.status_code == 200, r.text
    reviewer, *others = passengers
    targets = [driver, *others]
    clients = itertools.cycle((a, b))
    posts: list[Post] = [
        lambda t=t, http=next(clients): http.post(
            f"/api/v1/rides/{ride['id']}/reviews",
            json={"target_id": t.id, "stars": 5},
            headers=reviewer.headers,
        )
        for t in targets
    ]
    await assert_budget(posts, already=1)


async def test_creating_alerts_beyond_the_write_rate_is_429_across_instances(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    owner = await signup(a)
    clients = itertools.cycle((a, b))
    posts: list[Post] = [
        lambda n=n, http=next(clients): http.post(
            "/api/v1/alerts",
            json={"origin": f"From{n}", "destination": "Kazan"},
            headers=owner.headers,
        )
        for n in range(WRITES + 1)
    ]
    await assert_budget(posts)


async def test_the_write_rate_is_per_user(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    first, second = await signup(a), await signup(b)
    for n in range(WRITES):
        r = await a.post("/api/v1/rides", json=ride_body(n), headers=first.headers)
        assert r.status_code == 201, r.text
    assert_rate_limited(await b.post("/api/v1/rides", json=ride_body(9), headers=first.headers))
    r = await b.post("/api/v1/rides", json=ride_body(9), headers=second.headers)
    assert r.status_code == 201, r.text


async def test_only_creating_posts_draw_on_the_write_rate(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    """Past the budget, confirming, cancelling, editing and reading notifications still work."""
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    booking = (await book(b, passenger, ride["id"])).json()
    for n in range(WRITES - 1):
        r = await a.post("/api/v1/rides", json=ride_body(n), headers=driver.headers)
        assert r.status_code == 201, r.text
    assert_rate_limited(await b.post("/api/v1/rides", json=ride_body(9), headers=driver.headers))
    r = await b.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert r.status_code == 200, r.text
    r = await a.patch(f"/api/v1/rides/{ride['id']}", json={"price": 90}, headers=driver.headers)
    assert r.status_code == 200, r.text
    r = await a.post("/api/v1/notifications/read-all", headers=driver.headers)
    assert r.status_code == 200, r.text
    r = await b.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=driver.headers)
    assert r.status_code == 200, r.text
    r = await a.post(f"/api/v1/rides/{ride['id']}/cancel", headers=driver.headers)
    assert r.status_code == 200, r.text


async def test_the_next_handshake_beyond_sockets_per_user_is_refused_with_429(
    limited: Deployment, a: httpx.AsyncClient
) -> None:
    user = await signup(a)
    async with (
        limited.socket(limited.a, user.access_token),
        limited.socket(limited.b, user.access_token) as second,
    ):
        for server in limited.instances:
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(limited.ws_url(server), user.access_token):
                    pass
            assert_refused_429(refused.value)
        await second.close()

        async def accepted() -> bool:
            try:
                async with limited.socket(limited.a, user.access_token):
                    return True
            except InvalidStatus as exc:
                if exc.response.status_code != 429:
                    raise
                return False

        await wait_until(accepted, timeout=20, what="a socket slot freed by a close")


async def test_concurrent_handshakes_on_two_instances_open_at_most_the_socket_limit(
    limited: Deployment, a: httpx.AsyncClient
) -> None:
    user = await signup(a)
    opened = asyncio.Event()
    results: list[int] = []

    async def handshake(server_index: int) -> None:
        try:
            async with limited.socket(limited.instances[server_index], user.access_token):
                results.append(101)
                await opened.wait()  # hold it until every handshake has been answered
        except InvalidStatus as exc:
            assert_refused_429(exc)
            results.append(429)

    tasks = [asyncio.create_task(handshake(n % 2)) for n in range(8)]
    for _ in range(400):  # every handshake answered (or one failed), 20 s at most
        if len(results) == len(tasks) or any(t.done() and t.exception() for t in tasks):
            break
        await asyncio.sleep(0.05)
    opened.set()
    await asyncio.gather(*tasks)
    assert sorted(results) == [101] * SOCKETS + [429] * (8 - SOCKETS), results


async def test_concurrent_wrong_logins_on_two_instances_check_at_most_the_limit(
    limited: Deployment, a: httpx.AsyncClient
) -> None:
    owner = await signup(a)

    async def wrong(server_url: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=server_url, timeout=30) as stranger:
            return await login(stranger, owner.email, "wrong-password-1")

    urls = [s.base_url for s in limited.instances] * 10
    answers = await asyncio.gather(*(wrong(url) for url in urls))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [401] * FAILURES + [429] * (len(urls) - FAILURES), statuses
    for r in answers:
        if r.status_code == 429:
            assert_rate_limited(r, LOGIN_WINDOW_S)
        else:
            assert_error(r, 401, "unauthorized")
    async with httpx.AsyncClient(base_url=limited.b.base_url) as stranger:
        assert_rate_limited(await login(stranger, owner.email, "wrong-password-2"), LOGIN_WINDOW_S)


async def test_the_default_write_rate_is_120_a_minute(
    kuda: Deployment,
) -> None:
    async with (
        httpx.AsyncClient(base_url=kuda.a.base_url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=kuda.b.base_url, timeout=30) as on_b,
    ):
        driver = await signup(on_a)
        ride = await make_ride(on_a, driver)
        url = f"/api/v1/rides/{ride['id']}/messages"
        for n in range(2, 121):
            http = on_a if n % 2 else on_b
            r = await http.post(url, json={"body": f"m{n}"}, headers=driver.headers)
            assert r.status_code == 201, (n, r.text)
        assert_rate_limited(
            await on_a.post(url, json={"body": "one too many"}, headers=driver.headers)
        )


async def test_write_rate_0_turns_the_limit_off(limited: Deployment) -> None:
    async with httpx.AsyncClient(base_url=limited.extra["unlimited"].base_url) as http:
        driver = await signup(http)
        ride = await make_ride(http, driver)
        url = f"/api/v1/rides/{ride['id']}/messages"
        for n in range(125):  # beyond the default 120 too
            r = await http.post(url, json={"body": f"m{n}"}, headers=driver.headers)
            assert r.status_code == 201, (n, r.text)


async def wrong_logins(deployment: Deployment, email: str, n: int = 20) -> list[int]:
    """`n` wrong passwords for `email` at once, half on each instance, from fresh clients."""

    async def wrong(url: str) -> int:
        async with httpx.AsyncClient(base_url=url, timeout=60) as stranger:
            return (await login(stranger, email, "wrong-password-3")).status_code

    urls = [s.base_url for s in deployment.instances] * (n // 2)
    return sorted(await asyncio.gather(*(wrong(url) for url in urls)))


async def test_the_login_failure_limit_holds_when_redis_is_slow_or_down(
    limited: Deployment, redis_server: RedisServer, a: httpx.AsyncClient
) -> None:
    slow, down = await signup(a), await signup(a)
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # connections open, no answers
    try:
        statuses = await wrong_logins(limited, slow.email)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert statuses == [401] * FAILURES + [429] * (20 - FAILURES), statuses
    redis_server.kill()
    try:
        statuses = await wrong_logins(limited, down.email)
    finally:
        redis_server.start()  # back, so the instances stop promptly
    assert statuses == [401] * FAILURES + [429] * (20 - FAILURES), statuses


async def test_the_default_socket_limit_is_20_across_instances(kuda: Deployment) -> None:
    async with httpx.AsyncClient(base_url=kuda.a.base_url) as http:
        user = await signup(http)
    async with contextlib.AsyncExitStack() as stack:
        for n in range(20):
            server = kuda.instances[n % 2]
            await stack.enter_async_context(kuda.socket(server, user.access_token))
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(kuda.ws_url(kuda.b), user.access_token):
                pass
        assert_refused_429(refused.value)
