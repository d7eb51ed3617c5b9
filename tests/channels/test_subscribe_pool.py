"""A subscribe holds at most one database connection at a time (issue 8: the channel state was
read in one session and the channel's rule opened a second while the first was still held, so
~200 concurrent chat subscribes exhausted the pool, each holding one connection and waiting for
another, and all of them timed out with `internal_error`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx

from channels import append
from tests.helpers import Account, signup
from tests.live import LiveServer, WsClient, ws_connect

POOL = 2  # connections in the server's pool, overflow included
SOCKETS = 24  # concurrent subscribes, many times the pool


async def _chat_ride(http: httpx.AsyncClient, driver: Account) -> int:
    body = {"origin": "Innopolis", "destination": "Kazan", "seats_total": 3,
            "departure_at": "2099-01-01T10:00:00Z"}  # fmt: skip
    r = await http.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_more_concurrent_subscribes_than_pooled_connections_are_all_answered(
    live_factory: Callable[..., Any],
) -> None:
    live: LiveServer = await live_factory(
        db_pool_size=POOL,
        db_max_overflow=0,
        db_pool_timeout_s=3,
        sockets_per_user=0,
        replay_cache_bytes=0,  # every replay reads PostgreSQL
    )
    async with httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        driver = await signup(http)
        rides = [await _chat_ride(http, driver) for _ in range(3)]
    channels = [f"ride:{rides[i % 3]}:chat" for i in range(SOCKETS)]
    async with live.sessionmaker() as session:
        for channel in set(channels):
            await append(session, channel, "message.created", {"body": "hello"})
        await session.commit()

    async with contextlib.AsyncExitStack() as stack:
        clients = await asyncio.gather(*(_open(stack, live, driver) for _ in range(SOCKETS)))
        for round_ in range(3):  # with and without a replay, and the user channel too
            since: dict[str, Any] = {"since": 0} if round_ == 1 else {}
            frames = [
                {"op": "subscribe", "channel": channels[i], "id": i, **since}
                if round_ < 2
                else {"op": "subscribe", "channel": f"ride:{rides[i % 3]}", "id": i}
                for i in range(SOCKETS)
            ]
            answers = await asyncio.gather(
                *(_subscribe(ws, frame) for ws, frame in zip(clients, frames, strict=True))
            )
            errors = [a for a in answers if a["type"] != "subscribed"]
            assert not errors, f"round {round_}: {len(errors)} refused, e.g. {errors[0]}"
            assert [a["id"] for a in answers] == list(range(SOCKETS))
            if round_ == 0:
                for ws, channel in zip(clients, channels, strict=True):
                    await ws.request({"op": "unsubscribe", "channel": channel})


async def _open(stack: contextlib.AsyncExitStack, live: LiveServer, account: Account) -> WsClient:
    ws: WsClient = await stack.enter_async_context(ws_connect(live.ws_url, account.access_token))
    await ws.expect("welcome")
    return ws


async def _subscribe(ws: WsClient, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(frame)
    while True:
        answer = await ws.recv(timeout=30)
        if answer["type"] != "event":  # replayed events come before the ack
            return answer


async def test_more_concurrent_rest_replays_than_pooled_connections_are_all_answered(
    live_factory: Callable[..., Any],
) -> None:
    """`GET /channels/{channel}/events` reads the state, then runs the rule: the same shape."""
    live: LiveServer = await live_factory(db_pool_size=POOL, db_max_overflow=0, db_pool_timeout_s=3)
    async with httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        driver = await signup(http)
        ride = await _chat_ride(http, driver)
        channel = f"ride:{ride}:chat"
        async with live.sessionmaker() as session:
            await append(session, channel, "message.created", {"body": "hello"})
            await session.commit()
        url = f"/api/v1/channels/{channel}/events"
        answers = await asyncio.gather(
            *(http.get(url, headers=driver.headers) for _ in range(SOCKETS))
        )
    assert [r.status_code for r in answers] == [200] * SOCKETS, answers[0].text
    assert all([e["seq"] for e in r.json()["items"]] == [1] for r in answers)
