"""Snapshot fencing: REST reads carry `Kuda-Seq`, the head seq of the object's channel read in
the same snapshot as the data. Readers race concurrent writers; afterwards the event log must
say that each response showed exactly the changes of the events up to its `Kuda-Seq`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from kuda.client import Client
from tests import services
from tests.client.conftest import login_token, seqs, take
from tests.domain.conftest import make_ride
from tests.helpers import Account, signup
from tests.live import LiveServer

RIDE = {"seats_total": 8, "instant_booking": True}


async def _log(http: httpx.AsyncClient, who: Account, channel: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/v1/channels/{channel}/events", params={"limit": 1000},
                       headers=who.headers)  # fmt: skip
    assert r.status_code == 200 and r.json()["next_since"] is None
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _race(
    writes: list[Callable[[], Awaitable[Any]]], read: Callable[[], Awaitable[Any]]
) -> list[Any]:
    """Run the writes concurrently, reading again and again until they are all done."""
    done = asyncio.Event()
    reads: list[Any] = []

    async def reader() -> None:
        while not done.is_set():
            reads.append(await read())

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.gather(*(w() for w in writes))
    done.set()
    await asyncio.gather(*readers)
    reads.append(await read())
    return reads


@pytest.mark.parametrize("cached", [False, True], ids=["postgres", "redis-cache"])
async def test_ride_reads_are_fenced_by_the_ride_channel_seq(
    live_factory: Callable[..., Any], redis: Any, redis_prefix: str, cached: bool
) -> None:
    extra = {"redis_url": services.REDIS_URL, "redis_prefix": redis_prefix} if cached else {}
    server: LiveServer = await live_factory(**extra)
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        driver = await signup(http)
        passengers = [await signup(http) for _ in range(6)]
        ride = await make_ride(http, driver, **RIDE)
        url = f"/api/v1/rides/{ride['id']}"

        def edit(i: int) -> Callable[[], Awaitable[Any]]:
            return lambda: http.patch(url, json={"notes": f"edit {i}"}, headers=driver.headers)

        def book(p: Account) -> Callable[[], Awaitable[Any]]:
            return lambda: http.post(f"{url}/bookings", json={"seats": 1}, headers=p.headers)

        async def read() -> tuple[dict[str, Any], int]:
            r = await http.get(url, headers=passengers[0].headers)
            assert r.status_code == 200
            return r.json(), int(r.headers["Kuda-Seq"])

        reads = await _race([*(edit(i) for i in range(12)), *map(book, passengers)], read)
        log = await _log(http, driver, f"ride:{ride['id']}")
    assert seqs(log) == list(range(1, 19))
    state = [(ride["version"], ride["seats_available"])]  # the state after each seq
    for event in log:
        version = event["data"]["version"] if event["event"] == "ride.updated" else state[-1][0]
        state.append((version, event["data"]["seats_available"]))
    assert len(set(state)) == len(state)  # every event changed what a reader sees
    for view, seq in reads:
        assert (view["version"], view["seats_available"]) == state[seq], (seq, view)
    assert len({seq for _, seq in reads}) > 2  # the reads did interleave with the writes


async def test_message_and_notification_reads_are_fenced(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await make_ride(http, driver, **RIDE)
    messages = f"/api/v1/rides/{ride['id']}/messages"
    booked = await http.post(
        f"/api/v1/rides/{ride['id']}/bookings", json={"seats": 1}, headers=passenger.headers
    )
    assert booked.status_code == 201
    others = [await signup(http) for _ in range(5)]

    def post(i: int) -> Callable[[], Awaitable[Any]]:
        who = driver if i % 2 else passenger
        return lambda: http.post(messages, json={"body": f"m{i}"}, headers=who.headers)

    def book(p: Account) -> Callable[[], Awaitable[Any]]:  # notifies the driver
        url = f"/api/v1/rides/{ride['id']}/bookings"
        return lambda: http.post(url, json={"seats": 1}, headers=p.headers)

    async def read() -> tuple[set[int], int, set[int], int, int, int]:
        chat, notes, unread = await asyncio.gather(
            http.get(messages, params={"limit": 100}, headers=driver.headers),
            http.get("/api/v1/notifications", params={"limit": 100}, headers=driver.headers),
            http.get("/api/v1/notifications/unread-count", headers=driver.headers),
        )
        return (
            {m["id"] for m in chat.json()["items"]},
            int(chat.headers["Kuda-Seq"]),
            {n["id"] for n in notes.json()["items"]},
            int(notes.headers["Kuda-Seq"]),
            unread.json()["unread"],
            int(unread.headers["Kuda-Seq"]),
        )

    reads = await _race([*(post(i) for i in range(30)), *map(book, others)], read)
    chat_log = await _log(http, driver, f"ride:{ride['id']}:chat")
    user_log = await _log(http, driver, f"user:{driver.id}")

    def notes_until(seq: int) -> set[int]:
        return {e["data"]["id"] for e in user_log[:seq] if e["event"] == "notification.created"}

    for message_ids, chat_seq, note_ids, user_seq, unread, unread_seq in reads:
        assert message_ids == {e["data"]["id"] for e in chat_log[:chat_seq]}
        assert note_ids == notes_until(user_seq)
        assert unread == len(notes_until(unread_seq))  # none were read
    assert len({r[1] for r in reads}) > 2 and len({r[3] for r in reads}) > 1


async def test_a_snapshot_then_subscribe_since_its_seq_misses_and_repeats_nothing(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    """The use the header is for: render the snapshot, then follow from exactly there."""
    driver = await signup(http)
    ride = await make_ride(http, driver, **RIDE)
    url = f"/api/v1/rides/{ride['id']}"
    for i in range(3):
        await http.patch(url, json={"notes": f"before {i}"}, headers=driver.headers)
    snapshot = await http.get(url, headers=driver.headers)
    version, seq = snapshot.json()["version"], int(snapshot.headers["Kuda-Seq"])
    assert seq == 3
    for i in range(2):
        await http.patch(url, json={"notes": f"after {i}"}, headers=driver.headers)
    async with Client(live.http, login_token(live.http, driver)) as client:
        sub = client.subscribe(f"ride:{ride['id']}", since=seq)
        events = await take(sub, 2)
    assert [e["data"]["version"] for e in events] == [version + 1, version + 2]


async def test_kuda_seq_is_exposed_to_browsers_through_cors(
    live_factory: Callable[..., Any],
) -> None:
    server: LiveServer = await live_factory(allowed_origins=["https://app.example"])
    async with httpx.AsyncClient(base_url=server.http) as http:
        driver = await signup(http)
        ride = await make_ride(http, driver, **RIDE)
        r = await http.get(
            f"/api/v1/rides/{ride['id']}",
            headers={**driver.headers, "Origin": "https://app.example"},
        )
    assert r.headers["Kuda-Seq"] == "0"
    assert "kuda-seq" in r.headers["access-control-expose-headers"].lower()
