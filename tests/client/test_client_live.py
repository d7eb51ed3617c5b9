"""The Python client against a real server (uvicorn in the test's loop, real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from channels import events
from kuda.client import Client, ServerError, StateChange, Unauthorized
from kuda.client.replay import ReplayPage
from tests.client.conftest import account_on, append_events, login_token, seqs, take
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, signup
from tests.live import LiveServer


async def test_subscribe_delivers_replay_then_live_events_once_in_order(
    live: LiveServer, account: Account
) -> None:
    channel = f"user:{account.id}"
    await append_events(live, channel, 1, 5)
    async with Client(live.http, login_token(live.http, account)) as client:
        sub = await client.subscribe(channel, since=2)
        assert [f["data"]["i"] for f in await take(sub, 3)] == [3, 4, 5]
        await append_events(live, channel, 6, 3)
        assert seqs(await take(sub, 3)) == [6, 7, 8]
        assert client.state == "connected"
    assert client.state == "closed"
    assert [f async for f in sub] == []  # the iteration ends when the client closes
    await asyncio.sleep(0)


async def test_a_gap_longer_than_the_socket_replay_is_filled_from_rest_without_a_reset(
    live: LiveServer, account: Account
) -> None:
    """1,500 events behind: the socket answers `recovered: false` (over its 1,000 cap) and the
    client pages the REST replay instead, so nothing is missed and no reset is needed."""
    channel = f"user:{account.id}"
    await append_events(live, channel, 1, 1500)
    async with Client(live.http, login_token(live.http, account)) as client:
        sub = client.subscribe(channel, since=0)
        frames = await take(sub, 1500)
        assert seqs(frames) == list(range(1, 1501)) and sub.resets == 0
        await append_events(live, channel, 1501, 2)
        assert seqs(await take(sub, 2)) == [1501, 1502]


async def test_a_second_subscription_from_an_older_seq_fills_its_own_gap(
    live: LiveServer, account: Account
) -> None:
    channel = f"user:{account.id}"
    async with Client(live.http, login_token(live.http, account)) as client:
        first = await client.subscribe(channel)
        await append_events(live, channel, 1, 20)
        assert seqs(await take(first, 20)) == list(range(1, 21))
        second = client.subscribe(channel, since=5)  # the same socket subscription, older
        await append_events(live, channel, 21, 5)
        assert seqs(await take(second, 20)) == list(range(6, 26))
        assert seqs(await take(first, 5)) == list(range(21, 26))
        first.unsubscribe()
        await append_events(live, channel, 26, 1)
        assert seqs(await take(second, 1)) == [26]


async def test_history_gone_from_retention_yields_a_reset_then_continues(
    live: LiveServer, account: Account
) -> None:
    channel = f"user:{account.id}"
    await append_events(live, channel, 1, 10)
    async with live.sessionmaker() as session:
        await session.execute(
            text(
                "UPDATE events SET created_at = now() - interval '30 days' "
                "WHERE channel = :c AND seq <= 5"
            ),
            {"c": channel},
        )
        await events.trim(session, keep_s=7 * 24 * 3600)
        await session.commit()
    async with Client(live.http, login_token(live.http, account)) as client:
        sub = client.subscribe(channel, since=2)
        (reset,) = await take(sub, 1)
        assert reset == {"type": "reset", "channel": channel, "seq": 10}
        await append_events(live, channel, 11, 2)
        assert seqs(await take(sub, 2)) == [11, 12]


async def test_send_returns_the_stored_message_which_also_arrives_once_as_an_event(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver = await signup(http)
    ride = await make_ride(http, driver)
    chat = f"ride:{ride['id']}:chat"
    async with Client(live.http, login_token(live.http, driver)) as client:
        sub = await client.subscribe(chat)
        stored = await client.send(chat, "at the north gate")
        assert stored["body"] == "at the north gate" and stored["author_id"] == driver.id
        (event,) = await take(sub, 1)
        assert event["event"] == "message.created" and event["data"]["id"] == stored["id"]
        with pytest.raises(ServerError) as refused:
            await client.send(chat, "")
        assert refused.value.code in {"validation_error", "bad_request"}


async def _chat_members(http: httpx.AsyncClient) -> tuple[Account, Account, dict[str, Any]]:
    """A driver, a passenger with a confirmed seat, and the passenger's booking."""
    driver, passenger = await signup(http), await signup(http)
    ride = await make_ride(http, driver, instant_booking=True)
    booking = await book(http, passenger, ride["id"])
    assert booking.status_code == 201 and booking.json()["status"] == "confirmed"
    return driver, passenger, booking.json()


async def test_a_revoked_chat_subscription_ends_with_forbidden(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    _, passenger, booking = await _chat_members(http)
    ride = {"id": booking["ride_id"]}
    async with Client(live.http, login_token(live.http, passenger)) as client:
        sub = await client.subscribe(f"ride:{ride['id']}:chat")
        cancelled = await http.post(
            f"/api/v1/bookings/{booking['id']}/cancel", headers=passenger.headers
        )
        assert cancelled.status_code == 200
        with pytest.raises(ServerError) as ended:
            await take(sub, 1)
        assert ended.value.code == "forbidden"
        with pytest.raises(ServerError):  # and it is refused when asked again
            await client.subscribe(f"ride:{ride['id']}:chat")


async def test_token_is_refreshed_on_the_live_socket_before_it_expires(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(access_token_ttl_s=3)
    account = await account_on(server.http)
    channel = f"user:{account.id}"
    async with Client(server.http, login_token(server.http, account)) as client:
        sub = await client.subscribe(channel)
        async with asyncio.timeout(30):
            while client.token_calls < 4:  # the first token, then refreshes with `auth`
                await asyncio.sleep(0.1)
        await append_events(server, channel, 1, 1)
        assert seqs(await take(sub, 1)) == [1]
        assert client.connections == 1  # never closed 4401, never reconnected


async def test_an_expired_token_closes_4401_and_the_client_resumes_with_a_new_one(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(access_token_ttl_s=2)
    account = await account_on(server.http)
    channel = f"user:{account.id}"
    changes: list[StateChange] = []
    client = Client(server.http, login_token(server.http, account), refresh_ratio=50)
    client.on_state(changes.append)
    async with client:
        sub = await client.subscribe(channel)
        async with asyncio.timeout(30):
            while client.connections < 2:
                await asyncio.sleep(0.05)
        await append_events(server, channel, 1, 2)
        assert seqs(await take(sub, 2)) == [1, 2]
    assert any(c.state == "disconnected" and c.code == 4401 for c in changes)
    assert changes[-1].state == "closed"


async def test_get_token_failing_is_terminal_unauthorized(live: LiveServer) -> None:
    async def no_token() -> str:
        raise RuntimeError("signed out")

    client = Client(live.http, no_token)
    sub = client.subscribe("user:1")
    with pytest.raises(Unauthorized):
        await client.connect()
    assert client.state == "unauthorized"
    with pytest.raises(Unauthorized):
        await take(sub, 1)
    await client.close()


async def test_a_consumer_that_falls_behind_its_buffer_still_gets_every_event_in_order(
    live: LiveServer, account: Account
) -> None:
    """Past `max_buffer` the client stops queueing and later pages what it dropped from the
    REST replay: bounded memory, nothing lost."""
    channel = f"user:{account.id}"
    async with Client(live.http, login_token(live.http, account), max_buffer=8) as client:
        pages: list[int] = []
        page = client.replay_page

        async def counted(channel: str, since: int, limit: int) -> ReplayPage:
            pages.append(since)
            return await page(channel, since, limit)

        client.replay_page = counted  # type: ignore[method-assign]
        sub = await client.subscribe(channel)
        await append_events(live, channel, 1, 60)
        async with asyncio.timeout(30):
            while client._channels[channel].head != 60:  # all arrived on the socket
                await asyncio.sleep(0.05)
        assert seqs(await take(sub, 60)) == list(range(1, 61)) and sub.resets == 0
        assert pages  # what did not fit was fetched from the REST replay


async def test_presence_lists_the_users_subscribed_to_a_chat(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger, booking = await _chat_members(http)
    chat = f"ride:{booking['ride_id']}:chat"
    async with (
        Client(live.http, login_token(live.http, driver)) as on_driver,
        Client(live.http, login_token(live.http, passenger)) as on_passenger,
    ):
        driver_sub = await on_driver.subscribe(chat)
        await on_passenger.subscribe(chat)
        async with asyncio.timeout(30):
            while sorted(await on_driver.presence(chat)) != sorted([driver.id, passenger.id]):
                await asyncio.sleep(0.1)
        joined = await take(driver_sub, 1)
        assert joined[0]["event"] == "presence.joined"
        assert joined[0]["data"] == {"user_id": passenger.id}


async def test_a_session_ended_by_logout_reaches_unauthorized(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    """Logout closes the socket 4401; the app's `get_token` cannot refresh a revoked session
    and raises: the client stops in `unauthorized` and the iteration says so."""
    account = await signup(http)
    refresh = {"token": account.refresh_token}

    async def get_token() -> str:  # what an app does: rotate with the refresh token
        r = await http.post("/api/v1/auth/refresh", json={"refresh_token": refresh["token"]})
        if r.status_code == 401:
            raise PermissionError("signed out")
        refresh["token"] = r.json()["refresh_token"]
        return str(r.json()["access_token"])

    changes: list[StateChange] = []
    client = Client(live.http, get_token)
    client.on_state(changes.append)
    async with client:
        sub = await client.subscribe(f"user:{account.id}")
        logout = await http.post("/api/v1/auth/logout", json={"refresh_token": refresh["token"]})
        assert logout.status_code == 204
        async with asyncio.timeout(30):
            assert await client.wait_for("unauthorized") == "unauthorized"
        with pytest.raises(Unauthorized):
            await take(sub, 1)
    assert any(c.code == 4401 for c in changes)
