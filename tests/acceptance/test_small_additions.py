"""PROTOCOL.md section 6, "Small REST additions", on two instances: the unread count, the rides I
drive, and `client_id` on chat messages (REST and the socket `send` op)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Deployment, events_until
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup
from tests.live import WsClient

pytestmark = pytest.mark.slow


def at(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def unread(http: httpx.AsyncClient, user: Account) -> dict[str, Any]:
    r = await http.get("/api/v1/notifications/unread-count", headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_unread_count_is_an_object_with_one_integer(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(a), await signup(b)
    assert await unread(a, driver) == {"unread": 0}
    ride = await make_ride(a, driver)
    assert (await book(b, passenger, ride["id"])).status_code == 201
    assert await unread(b, driver) == {"unread": 1}
    assert (await a.post("/api/v1/notifications/read-all", headers=driver.headers)).is_success
    assert await unread(b, driver) == {"unread": 0}
    assert_error(await a.get("/api/v1/notifications/unread-count"), 401, "unauthorized")


async def my_rides(
    http: httpx.AsyncClient, user: Account, status: str | None = None
) -> dict[str, Any]:
    params = {"status": status} if status else {}
    r = await http.get("/api/v1/users/me/rides", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    assert set(page) >= {"items", "next_cursor"}, page
    return page


async def test_my_rides_are_the_rides_i_drive_soonest_departure_first(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, other = await signup(a), await signup(b)
    later = await make_ride(a, driver, departure_at=at(30))
    sooner = await make_ride(b, driver, departure_at=at(3))
    middle = await make_ride(a, driver, departure_at=at(10))
    await make_ride(b, other, departure_at=at(5))
    page = await my_rides(b, driver)
    assert [r["id"] for r in page["items"]] == [sooner["id"], middle["id"], later["id"]]
    assert page["next_cursor"] is None
    shown = (await a.get(f"/api/v1/rides/{middle['id']}", headers=other.headers)).json()
    assert page["items"][1] == shown


async def test_my_rides_filter_by_status(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    driver = await signup(a)
    kept = await make_ride(a, driver, departure_at=at(4))
    dropped = await make_ride(a, driver, departure_at=at(2))
    r = await b.post(f"/api/v1/rides/{dropped['id']}/cancel", headers=driver.headers)
    assert r.status_code == 200, r.text
    cancelled = await my_rides(b, driver, "cancelled")
    assert [(x["id"], x["status"]) for x in cancelled["items"]] == [(dropped["id"], "cancelled")]
    scheduled = await my_rides(a, driver, "scheduled")
    assert [(x["id"], x["status"]) for x in scheduled["items"]] == [(kept["id"], "scheduled")]
    assert [x["id"] for x in (await my_rides(a, driver))["items"]] == [dropped["id"], kept["id"]]


async def test_my_rides_page_through_a_cursor(a: httpx.AsyncClient) -> None:
    driver = await signup(a)
    rides = [await make_ride(a, driver, departure_at=at(h)) for h in (9, 3, 6)]
    first = (
        await a.get("/api/v1/users/me/rides", params={"limit": 2}, headers=driver.headers)
    ).json()
    assert first["next_cursor"]
    second = (
        await a.get(
            "/api/v1/users/me/rides",
            params={"limit": 2, "cursor": first["next_cursor"]},
            headers=driver.headers,
        )
    ).json()
    ids = [r["id"] for r in first["items"] + second["items"]]
    assert ids == [rides[1]["id"], rides[2]["id"], rides[0]["id"]]


# --- client_id ------------------------------------------------------------------------------


@pytest.fixture
async def chat(a: httpx.AsyncClient) -> tuple[Account, dict[str, Any]]:
    driver = await signup(a)
    return driver, await make_ride(a, driver)


@pytest.fixture
async def listener(
    kuda: Deployment, b: httpx.AsyncClient, chat: tuple[Account, dict[str, Any]]
) -> AsyncIterator[WsClient]:
    """A confirmed passenger subscribed to the ride's chat on instance b."""
    driver, ride = chat
    passenger = await signup(b)
    booking = (await book(b, passenger, ride["id"])).json()
    r = await b.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert r.status_code == 200, r.text
    async with kuda.socket(kuda.b, passenger.access_token) as ws:
        ack = await ws.request({"op": "subscribe", "channel": f"ride:{ride['id']}:chat"})
        assert ack["type"] == "subscribed", ack
        yield ws


async def post_message(
    http: httpx.AsyncClient, user: Account, ride_id: int, body: str, client_id: str | None
) -> httpx.Response:
    payload: dict[str, Any] = {"body": body}
    if client_id is not None:
        payload["client_id"] = client_id
    return await http.post(f"/api/v1/rides/{ride_id}/messages", json=payload, headers=user.headers)


async def pushed_until(ws: WsClient, message_id: int) -> list[dict[str, Any]]:
    """The stored messages pushed on the chat up to the one with `message_id`."""
    frames = await events_until(ws, lambda f: f["data"].get("id") == message_id)
    return [f["data"] for f in frames if f["event"] == "message.created"]


async def test_a_repeated_client_id_over_rest_returns_the_first_message_and_pushes_once(
    a: httpx.AsyncClient,
    b: httpx.AsyncClient,
    chat: tuple[Account, dict[str, Any]],
    listener: WsClient,
) -> None:
    driver, ride = chat
    client_id = uuid.uuid4().hex
    first = await post_message(a, driver, ride["id"], "on my way", client_id)
    assert first.status_code == 201, first.text
    again = await post_message(b, driver, ride["id"], "on my way", client_id)
    assert again.status_code in (200, 201), again.text
    assert again.json() == first.json()
    after = await post_message(a, driver, ride["id"], "next", None)
    pushed = await pushed_until(listener, after.json()["id"])
    assert [m["id"] for m in pushed] == [first.json()["id"], after.json()["id"]]
    listed = (await b.get(f"/api/v1/rides/{ride['id']}/messages", headers=driver.headers)).json()
    assert [m["id"] for m in listed["items"]] == [after.json()["id"], first.json()["id"]]


async def test_a_repeated_client_id_over_the_socket_acks_the_first_message_and_pushes_once(
    kuda: Deployment,
    a: httpx.AsyncClient,
    chat: tuple[Account, dict[str, Any]],
    listener: WsClient,
) -> None:
    driver, ride = chat
    channel, client_id = f"ride:{ride['id']}:chat", uuid.uuid4().hex
    frame = {"op": "send", "channel": channel, "body": "hi", "client_id": client_id}
    acks = []
    for server in kuda.instances:
        async with kuda.socket(server, driver.access_token) as ws:
            ack = await ws.request({**frame, "id": "m1"})
            while ack["type"] == "event":  # the ack and the event may come in either order
                ack = await ws.recv()
            assert ack["type"] == "ack" and ack["id"] == "m1", ack
            acks.append(ack["data"])
    assert acks[0] == acks[1] and acks[0]["body"] == "hi"
    rest = await post_message(a, driver, ride["id"], "hi again", client_id)
    assert rest.status_code in (200, 201) and rest.json() == acks[0], rest.text
    after = await post_message(a, driver, ride["id"], "next", None)
    pushed = await pushed_until(listener, after.json()["id"])
    assert [m["id"] for m in pushed] == [acks[0]["id"], after.json()["id"]]


async def test_the_same_client_id_from_another_author_or_on_another_ride_is_a_new_message(
    a: httpx.AsyncClient, b: httpx.AsyncClient, chat: tuple[Account, dict[str, Any]]
) -> None:
    driver, ride = chat
    client_id = uuid.uuid4().hex
    first = await post_message(a, driver, ride["id"], "one", client_id)
    other_ride = await make_ride(b, driver)
    elsewhere = await post_message(b, driver, other_ride["id"], "one", client_id)
    assert elsewhere.status_code == 201, elsewhere.text
    assert elsewhere.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("client_id", ["", "x" * 65])
async def test_a_client_id_outside_1_to_64_characters_is_422(
    a: httpx.AsyncClient, chat: tuple[Account, dict[str, Any]], client_id: str
) -> None:
    driver, ride = chat
    r = await post_message(a, driver, ride["id"], "hello", client_id)
    error = assert_error(r, 422, "validation_error")
    assert "client_id" in str(error["details"])
    ok = await post_message(a, driver, ride["id"], "hello", "x" * 64)
    assert ok.status_code == 201, ok.text


async def test_a_socket_send_with_a_bad_client_id_is_an_error_and_the_socket_stays_open(
    kuda: Deployment, chat: tuple[Account, dict[str, Any]]
) -> None:
    driver, ride = chat
    async with kuda.socket(kuda.a, driver.access_token) as ws:
        channel = f"ride:{ride['id']}:chat"
        for client_id in ("", "x" * 65):
            frame = {"op": "send", "channel": channel, "body": "hi", "client_id": client_id}
            refused = await ws.request({**frame, "id": "bad"})
            assert refused["type"] == "error" and refused["code"] == "validation_error", refused
        assert (await ws.request({"op": "ping"}))["type"] == "pong"


async def test_my_rides_with_an_unknown_status_is_422(a: httpx.AsyncClient) -> None:
    driver = await signup(a)
    r = await a.get("/api/v1/users/me/rides", params={"status": "bogus"}, headers=driver.headers)
    assert_error(r, 422, "validation_error")
    assert_error(await a.get("/api/v1/users/me/rides"), 401, "unauthorized")


async def test_a_malformed_message_is_422_before_403_for_a_non_member(
    a: httpx.AsyncClient, b: httpx.AsyncClient, chat: tuple[Account, dict[str, Any]]
) -> None:
    """The contract's check order (401, 422, 404, 403, ...) holds for `client_id` too."""
    _, ride = chat
    stranger = await signup(b)
    bad = await post_message(b, stranger, ride["id"], "hello", "x" * 65)
    assert_error(bad, 422, "validation_error")
    missing = await post_message(b, stranger, 2**62, "hello", "x" * 65)
    assert_error(missing, 422, "validation_error")
    assert_error(await post_message(b, stranger, ride["id"], "hello", "ok"), 403, "forbidden")
