"""PROTOCOL.md section 6, "Small REST additions": the unread count, a driver's own rides, and
`client_id` on chat messages (REST and socket)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.domain.conftest import book, future, make_ride
from tests.domain.test_chat import chat, confirmed_ride, history, joined, messages_url, next_frame
from tests.helpers import Account, assert_error, signup
from tests.live import LiveServer, ws_connect

UNREAD = "/api/v1/notifications/unread-count"
MY_RIDES = "/api/v1/users/me/rides"


# Unread count -------------------------------------------------------------------------------


async def test_unread_count_follows_new_and_read_notifications(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    r = await client.get(UNREAD, headers=driver.headers)
    assert r.status_code == 200 and r.json() == {"unread": 0}
    ride = await make_ride(client, driver)
    for _ in range(2):  # each request notifies the driver
        b = await book(client, passenger, ride["id"])
        assert b.status_code == 201
        cancel = await client.post(
            f"/api/v1/bookings/{b.json()['id']}/cancel", headers=passenger.headers
        )
        assert cancel.status_code == 200
    unread = (await client.get(UNREAD, headers=driver.headers)).json()["unread"]
    listed = await client.get("/api/v1/notifications?unread=true", headers=driver.headers)
    assert unread == len(listed.json()["items"]) == 4  # 2 requested + 2 cancelled
    first = listed.json()["items"][0]["id"]
    await client.post(f"/api/v1/notifications/{first}/read", headers=driver.headers)
    assert (await client.get(UNREAD, headers=driver.headers)).json() == {"unread": 3}
    await client.post("/api/v1/notifications/read-all", headers=driver.headers)
    assert (await client.get(UNREAD, headers=driver.headers)).json() == {"unread": 0}
    # Someone else's notifications never count.
    assert (await client.get(UNREAD, headers=passenger.headers)).json()["unread"] >= 0
    assert_error(await client.get(UNREAD), 401, "unauthorized")


# A driver's own rides -----------------------------------------------------------------------


async def test_my_rides_lists_rides_i_drive_soonest_first_with_status_filter(
    client: httpx.AsyncClient, driver: Account, stranger: Account
) -> None:
    late = await make_ride(client, driver, departure_at=future(72))
    soon = await make_ride(client, driver, departure_at=future(2))
    middle = await make_ride(client, driver, departure_at=future(24))
    await make_ride(client, stranger)  # not mine
    cancelled = await client.post(f"/api/v1/rides/{middle['id']}/cancel", headers=driver.headers)
    assert cancelled.status_code == 200

    r = await client.get(MY_RIDES, headers=driver.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"} and body["next_cursor"] is None
    assert [x["id"] for x in body["items"]] == [soon["id"], middle["id"], late["id"]]
    assert (
        body["items"][0]
        == (await client.get(f"/api/v1/rides/{soon['id']}", headers=driver.headers)).json()
    )

    only = await client.get(MY_RIDES, params={"status": "scheduled"}, headers=driver.headers)
    assert [x["id"] for x in only.json()["items"]] == [soon["id"], late["id"]]
    gone = await client.get(MY_RIDES, params={"status": "cancelled"}, headers=driver.headers)
    assert [x["id"] for x in gone.json()["items"]] == [middle["id"]]
    none = await client.get(MY_RIDES, headers=stranger.headers)
    assert len(none.json()["items"]) == 1


async def test_my_rides_pages_with_a_cursor_without_gaps_or_repeats(
    client: httpx.AsyncClient, driver: Account
) -> None:
    same = future(10)
    made = [await make_ride(client, driver, departure_at=same) for _ in range(3)]
    made += [await make_ride(client, driver, departure_at=future(5 + i)) for i in range(2)]
    expected = sorted(made, key=lambda r: (r["departure_at"], r["id"]))
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(MY_RIDES, params=params, headers=driver.headers)).json()
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in expected]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "finished"},
        {"status": ""},
        {"limit": 0},
        {"limit": 101},
        {"cursor": "not-a-cursor"},
        {"cursor": "WyJ4IiwgMV0"},  # ["x", 1]: not a time
    ],
)
async def test_my_rides_rejects_bad_queries(
    client: httpx.AsyncClient, driver: Account, params: dict[str, Any]
) -> None:
    error = assert_error(
        await client.get(MY_RIDES, params=params, headers=driver.headers), 422, "validation_error"
    )
    assert error["details"]


async def test_my_rides_needs_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(MY_RIDES), 401, "unauthorized")


# client_id on chat messages --------------------------------------------------------------


async def test_post_message_with_client_id_is_stored_once(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    url = messages_url(ride["id"])
    body = {"body": "On my way", "client_id": "m-1"}
    first = await client.post(url, json=body, headers=passenger.headers)
    assert first.status_code == 201, first.text
    assert first.json()["client_id"] == "m-1" and first.json()["body"] == "On my way"
    again = await client.post(url, json=body, headers=passenger.headers)
    assert again.status_code == 201 and again.json() == first.json()
    # The same client_id with another body still names the first message (a retry).
    edited = await client.post(url, json={**body, "body": "typo"}, headers=passenger.headers)
    assert edited.json() == first.json()
    # Another author, or another ride, may use the same client_id.
    other = await client.post(url, json=body, headers=driver.headers)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    ride2 = await confirmed_ride(client, driver, passenger)
    elsewhere = await client.post(messages_url(ride2["id"]), json=body, headers=passenger.headers)
    assert elsewhere.json()["id"] != first.json()["id"]
    items = await history(client, driver, ride["id"])
    assert [m["id"] for m in items] == [other.json()["id"], first.json()["id"]]
    # Without a client_id nothing changes: each post is a new message, no client_id key.
    plain = [await client.post(url, json={"body": "hi"}, headers=driver.headers) for _ in range(2)]
    assert plain[0].json()["id"] != plain[1].json()["id"]
    assert "client_id" not in plain[0].json()
    assert "client_id" not in (await history(client, driver, ride["id"]))[0]


async def test_concurrent_retries_with_one_client_id_store_one_message_and_one_event(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    async with ws_connect(live.ws_url, driver.access_token) as ws:
        await joined(ws, chat(ride["id"]))
        body = {"body": "Wait for me", "client_id": "retry-7"}
        answers = await asyncio.gather(
            *[
                http.post(messages_url(ride["id"]), json=body, headers=passenger.headers)
                for _ in range(8)
            ]
        )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        event = await next_frame(ws)
        assert event["event"] == "message.created" and event["seq"] == 1
        assert event["data"] == answers[0].json()
        await ws.send({"op": "ping"})
        assert (await next_frame(ws))["type"] == "pong"  # no second message.created
    assert len(await history(http, driver, ride["id"])) == 1


@pytest.mark.parametrize("client_id", ["", "x" * 65, 17, "nul\u0000"])
async def test_post_message_rejects_a_bad_client_id(
    client: httpx.AsyncClient, driver: Account, passenger: Account, client_id: Any
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    r = await client.post(
        messages_url(ride["id"]),
        json={"body": "hello", "client_id": client_id},
        headers=passenger.headers,
    )
    error = assert_error(r, 422, "validation_error")
    assert any("client_id" in str(d) for d in error["details"])


async def test_socket_send_with_client_id_is_acked_with_the_first_message(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    channel = chat(ride["id"])
    async with (
        ws_connect(live.ws_url, driver.access_token) as d,
        ws_connect(live.ws_url, passenger.access_token) as p,
    ):
        await joined(d, channel)
        await joined(p, channel)
        frame = {"op": "send", "channel": channel, "body": "Here", "client_id": "abc"}
        await p.send({**frame, "id": 1})
        got = [await next_frame(p), await next_frame(p)]
        ack = next(f for f in got if f["type"] == "ack")
        assert ack["id"] == 1 and ack["data"]["client_id"] == "abc"
        await p.send({**frame, "id": 2})
        second = await next_frame(p)
        assert second == {"type": "ack", "data": ack["data"], "id": 2}
        # The REST retry of the same client_id finds the same message too.
        rest = await http.post(
            messages_url(ride["id"]),
            json={"body": "Here", "client_id": "abc"},
            headers=passenger.headers,
        )
        assert rest.json() == ack["data"]
        (created,) = [await next_frame(d)]
        assert created["event"] == "message.created" and created["data"] == ack["data"]
        await d.send({"op": "ping"})
        assert (await next_frame(d))["type"] == "pong"  # one message.created only
        for bad in ("", "y" * 65, 5):
            err = await p.request({**frame, "client_id": bad, "id": "v"})
            assert err["type"] == "error" and err["code"] == "validation_error", err
            assert err["id"] == "v"
    assert len(await history(http, driver, ride["id"])) == 1
