"""Ride chat: REST history and posting, the socket `send`/`typing` ops, and membership loss.

Members are the driver and passengers with confirmed bookings (PROTOCOL.md sections 1 and 3).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup
from tests.live import LiveServer, WsClient, ws_connect

MESSAGE_KEYS = {"id", "ride_id", "author_id", "body", "created_at"}


def messages_url(ride_id: int) -> str:
    return f"/api/v1/rides/{ride_id}/messages"


def chat(ride_id: int) -> str:
    return f"ride:{ride_id}:chat"


async def confirmed_ride(
    client: httpx.AsyncClient, driver: Account, *passengers: Account
) -> dict[str, Any]:
    """A ride whose passengers all hold confirmed bookings (requested, then confirmed)."""
    ride = await make_ride(client, driver, seats_total=max(len(passengers), 1))
    for p in passengers:
        r = await book(client, p, ride["id"])
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        ok = await client.post(f"/api/v1/bookings/{r.json()['id']}/confirm", headers=driver.headers)
        assert ok.status_code == 200 and ok.json()["status"] == "confirmed", ok.text
    return ride


async def post(
    client: httpx.AsyncClient, who: Account, ride_id: int, body: str, **headers: str
) -> httpx.Response:
    return await client.post(
        messages_url(ride_id), json={"body": body}, headers={**who.headers, **headers}
    )


async def history(
    client: httpx.AsyncClient, who: Account, ride_id: int, **params: int
) -> list[dict[str, Any]]:
    r = await client.get(messages_url(ride_id), params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def next_frame(ws: WsClient) -> dict[str, Any]:
    """The next frame that is not a presence event (those come and go with subscriptions)."""
    while True:
        frame = await ws.recv()
        if frame["type"] == "event" and frame["event"].startswith("presence."):
            continue
        return frame


async def joined(ws: WsClient, *channels: str) -> None:
    await ws.expect("welcome")
    for channel in channels:
        await ws.send({"op": "subscribe", "channel": channel})
        ack = await next_frame(ws)
        assert ack["type"] == "subscribed" and ack["channel"] == channel, ack


async def pong(ws: WsClient) -> dict[str, Any]:
    """Ping and return the next non-presence frame: a pong when nothing else was queued."""
    await ws.send({"op": "ping"})
    return await next_frame(ws)


# REST ---------------------------------------------------------------------------------------


async def test_only_the_driver_and_confirmed_passengers_are_members(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver)
    url = messages_url(ride["id"])
    pending = await book(client, passenger, ride["id"])
    assert pending.json()["status"] == "pending"

    for outsider in (passenger, stranger):  # a pending booking is not membership
        assert_error(await client.get(url, headers=outsider.headers), 403, "forbidden")
        assert_error(await post(client, outsider, ride["id"], "hello?"), 403, "forbidden")
    assert_error(await client.get(url), 401, "unauthorized")
    assert_error(await client.post(url, json={"body": "hi"}), 401, "unauthorized")
    assert_error(await client.get(messages_url(999999), headers=stranger.headers), 404, "not_found")
    assert_error(await post(client, stranger, 999999, "anyone?"), 404, "not_found")
    # Order 401, 422, 404, 403: a malformed body is refused before the ride or membership.
    assert_error(await client.post(messages_url(999999), json={}), 401, "unauthorized")
    assert_error(await post(client, stranger, 999999, ""), 422, "validation_error")
    assert_error(await post(client, stranger, ride["id"], ""), 422, "validation_error")

    assert (await post(client, driver, ride["id"], "Leaving at 9")).status_code == 201
    confirm = f"/api/v1/bookings/{pending.json()['id']}/confirm"
    assert (await client.post(confirm, headers=driver.headers)).status_code == 200
    assert (await post(client, passenger, ride["id"], "See you")).status_code == 201
    assert [m["body"] for m in await history(client, passenger, ride["id"])] == [
        "See you",
        "Leaving at 9",
    ]
    assert_error(await client.get(url, headers=stranger.headers), 403, "forbidden")


async def test_post_returns_the_stored_message(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    r = await post(client, passenger, ride["id"], "  Can I bring a bike?  ")
    assert r.status_code == 201, r.text
    message = r.json()
    assert set(message) == MESSAGE_KEYS
    assert message["ride_id"] == ride["id"] and message["author_id"] == passenger.id
    assert message["body"] == "  Can I bring a bike?  "  # stored as sent
    assert isinstance(message["id"], int)
    created = datetime.fromisoformat(message["created_at"].replace("Z", "+00:00"))
    offset = created.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert await history(client, driver, ride["id"]) == [message]


async def test_body_validation(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    url = messages_url(ride["id"])
    bad: list[dict[str, Any]] = [
        {"body": ""},
        {"body": "x" * 2001},
        {"body": "   \n\t "},
        {},
        {"body": None},
        {"body": 42},
        {"body": "hi", "author_id": driver.id},
    ]
    for payload in bad:
        r = await client.post(url, json=payload, headers=passenger.headers)
        error = assert_error(r, 422, "validation_error")
        assert error["details"], (payload, error)
    assert await history(client, driver, ride["id"]) == []
    longest = "ё" * 2000  # 2000 characters (4000 bytes) is the limit, counted in characters
    ok = await post(client, passenger, ride["id"], longest)
    assert ok.status_code == 201 and ok.json()["body"] == longest
    assert [m["body"] for m in await history(client, driver, ride["id"])] == [longest]


# Regression (fixed in e91727f): a NUL character ("\u0000") in a message body was a 500
# internal_error over REST (PostgreSQL text cannot hold NUL; the DataError escaped) instead of a
# 422 validation_error naming the body.
async def test_a_nul_character_in_the_body_is_a_validation_error(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    r = await post(client, passenger, ride["id"], "before\u0000after")
    error = assert_error(r, 422, "validation_error")
    assert "body.body" in [d["field"] for d in error["details"]]
    assert await history(client, driver, ride["id"]) == []


async def test_history_is_newest_first_and_pages_back_with_before(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    sent = []
    for i in range(7):
        author = driver if i % 2 == 0 else passenger
        r = await post(client, author, ride["id"], f"message {i}")
        assert r.status_code == 201, r.text
        sent.append(r.json())
    newest_first = list(reversed(sent))
    assert await history(client, passenger, ride["id"]) == newest_first

    pages: list[list[dict[str, Any]]] = []
    params: dict[str, int] = {"limit": 3}
    while True:
        r = await client.get(messages_url(ride["id"]), params=params, headers=passenger.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page["items"])
        if page["next_cursor"] is None:
            break
        params = {"limit": 3, "before": page["items"][-1]["id"]}
    assert [[m["body"] for m in p] for p in pages] == [
        ["message 6", "message 5", "message 4"],
        ["message 3", "message 2", "message 1"],
        ["message 0"],
    ]
    assert [m for p in pages for m in p] == newest_first
    assert await history(client, driver, ride["id"], before=sent[0]["id"]) == []
    for query in ({"limit": 0}, {"limit": 101}, {"before": 0}, {"before": "x"}):
        r = await client.get(messages_url(ride["id"]), params=query, headers=driver.headers)
        assert_error(r, 422, "validation_error")


async def test_history_is_per_ride(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    one = await confirmed_ride(client, driver, passenger)
    two = await confirmed_ride(client, driver, passenger)
    assert (await post(client, driver, one["id"], "for ride one")).status_code == 201
    assert (await post(client, driver, two["id"], "for ride two")).status_code == 201
    assert [m["body"] for m in await history(client, passenger, one["id"])] == ["for ride one"]
    assert [m["body"] for m in await history(client, passenger, two["id"])] == ["for ride two"]


async def test_idempotency_key_on_post(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    first = await post(client, passenger, ride["id"], "On my way", **{"Idempotency-Key": "m-1"})
    again = await post(client, passenger, ride["id"], "On my way", **{"Idempotency-Key": "m-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    other = await post(client, passenger, ride["id"], "Running late", **{"Idempotency-Key": "m-1"})
    assert_error(other, 422, "validation_error")
    # The key is scoped to its user: the driver's "m-1" is a different message.
    mine = await post(client, driver, ride["id"], "On my way", **{"Idempotency-Key": "m-1"})
    assert mine.status_code == 201 and mine.json()["id"] != first.json()["id"]
    bodies = [(m["author_id"], m["body"]) for m in await history(client, driver, ride["id"])]
    assert bodies == [(driver.id, "On my way"), (passenger.id, "On my way")]


async def test_idempotency_key_concurrent_retries_store_one_message(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    answers = await asyncio.gather(
        *(post(client, passenger, ride["id"], "Once", **{"Idempotency-Key": "k"}) for _ in range(6))
    )
    created = [a.json() for a in answers if a.status_code == 201]
    assert created, [a.text for a in answers]
    for a in answers:  # the later ones wait for the first, or are told it is in flight
        if a.status_code != 201:
            assert_error(a, 409, "conflict")
    assert all(c == created[0] for c in created)
    assert await history(client, driver, ride["id"]) == [created[0]]


# Socket -------------------------------------------------------------------------------------


async def test_send_over_the_socket_stores_one_message_and_reaches_every_member(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    channel = chat(ride["id"])
    async with (
        ws_connect(live.ws_url, driver.access_token) as dws,
        ws_connect(live.ws_url, passenger.access_token) as pws,
    ):
        await joined(dws, channel)
        await joined(pws, channel)
        await pws.send({"op": "send", "channel": channel, "body": "Hi from the socket", "id": 7})
        # The sender gets the ack and the event, in either order (the contract names none).
        first, second = await next_frame(pws), await next_frame(pws)
        (ack,) = [f for f in (first, second) if f["type"] == "ack"]
        (own,) = [f for f in (first, second) if f["type"] == "event"]
        assert ack["id"] == 7, ack
        stored = ack["data"]
        assert set(stored) == MESSAGE_KEYS
        assert stored["author_id"] == passenger.id and stored["body"] == "Hi from the socket"
        assert await history(http, driver, ride["id"]) == [stored]

        seqs = []
        for event in (await next_frame(dws), own):
            assert event["type"] == "event" and event["channel"] == channel, event
            assert event["event"] == "message.created" and event["data"] == stored
            assert isinstance(event["seq"], int)
            seqs.append(event["seq"])
        assert seqs[0] == seqs[1]

        # A REST post reaches the sockets too, as the next seq, exactly once each.
        rest = await post(http, driver, ride["id"], "And one from REST")
        assert rest.status_code == 201
        for ws in (dws, pws):
            event = await next_frame(ws)
            assert event["event"] == "message.created" and event["data"] == rest.json()
            assert event["seq"] == seqs[0] + 1
        for ws in (dws, pws):  # nothing else queued before the pong: no duplicates
            assert (await pong(ws))["type"] == "pong"
        assert len(await history(http, passenger, ride["id"])) == 2


async def test_socket_send_validation_and_unknown_ride(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    async with ws_connect(live.ws_url, passenger.access_token) as ws:
        await ws.expect("welcome")
        cases = [
            (chat(ride["id"]), "   ", "validation_error"),
            (chat(ride["id"]), "y" * 2001, "validation_error"),
            (chat(999999), "hello", "not_found"),
        ]
        for i, (channel, body, code) in enumerate(cases):
            error = await ws.request({"op": "send", "channel": channel, "body": body, "id": i})
            assert error["type"] == "error" and error["code"] == code and error["id"] == i, error
        assert (await ws.request({"op": "ping"}))["type"] == "pong"  # the socket stays open
    assert await history(http, driver, ride["id"]) == []


# Regression (fixed in e91727f): over the socket a NUL character in `send`'s body was answered
# `bad_request` "Could not process op" (an unexpected failure, logged as an exception) instead of
# `validation_error`.
async def test_socket_send_with_a_nul_character_is_a_validation_error(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    async with ws_connect(live.ws_url, passenger.access_token) as ws:
        await ws.expect("welcome")
        frame = {"op": "send", "channel": chat(ride["id"]), "body": "a\u0000b", "id": 1}
        error = await ws.request(frame)
        assert error["type"] == "error" and error["code"] == "validation_error", error
    assert await history(http, driver, ride["id"]) == []


async def test_non_members_cannot_send_or_subscribe(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, pending, stranger = await signup(http), await signup(http), await signup(http)
    ride = await make_ride(http, driver)
    assert (await book(http, pending, ride["id"])).json()["status"] == "pending"
    channel = chat(ride["id"])
    for outsider in (stranger, pending):
        async with ws_connect(live.ws_url, outsider.access_token) as ws:
            await ws.expect("welcome")
            sent = await ws.request({"op": "send", "channel": channel, "body": "hi", "id": "s"})
            assert sent["type"] == "error" and sent["code"] == "forbidden" and sent["id"] == "s"
            sub = await ws.request({"op": "subscribe", "channel": channel, "id": "c"})
            assert sub["type"] == "error" and sub["code"] == "forbidden" and sub["id"] == "c"
            typing = await ws.request({"op": "typing", "channel": channel, "id": "t"})
            assert typing["type"] == "error" and typing["code"] == "forbidden"
    assert await history(http, driver, ride["id"]) == []


async def test_typing_reaches_the_other_members_only(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, alice, bob = await signup(http), await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, alice, bob)
    channel = chat(ride["id"])
    async with (
        ws_connect(live.ws_url, driver.access_token) as dws,
        ws_connect(live.ws_url, alice.access_token) as aws,
        ws_connect(live.ws_url, bob.access_token) as bws,
    ):
        for ws in (dws, aws, bws):
            await joined(ws, channel)
        await aws.send({"op": "typing", "channel": channel})
        for ws in (dws, bws):
            frame = await next_frame(ws)
            assert frame["type"] == "event" and frame["event"] == "typing", frame
            assert frame["channel"] == channel and frame["data"] == {"user_id": alice.id}
            assert "seq" not in frame  # ephemeral
        # The typist's own next frame is the pong: it never sees its own typing.
        assert (await pong(aws))["type"] == "pong"
        # Typing is never stored: the chat's history and seqs are untouched.
        assert await history(http, driver, ride["id"]) == []
        replay = await http.get(f"/api/v1/channels/{channel}/events", headers=driver.headers)
        assert replay.status_code == 200 and replay.json()["items"] == []


@pytest.mark.parametrize("cancelled_by", ["passenger", "driver"])
async def test_losing_membership_ends_the_chat_subscription(
    live: LiveServer, http: httpx.AsyncClient, cancelled_by: str
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    channel, ride_channel = chat(ride["id"]), f"ride:{ride['id']}"
    booking_id = (await http.get("/api/v1/bookings", headers=passenger.headers)).json()["items"][0][
        "id"
    ]
    async with (
        ws_connect(live.ws_url, driver.access_token) as dws,
        ws_connect(live.ws_url, passenger.access_token) as pws,
    ):
        await joined(dws, channel)
        await joined(pws, channel, ride_channel)
        assert (await post(http, driver, ride["id"], "before")).status_code == 201
        assert (await next_frame(pws))["data"]["body"] == "before"
        assert (await next_frame(dws))["data"]["body"] == "before"

        who = passenger if cancelled_by == "passenger" else driver
        cancel = await http.post(f"/api/v1/bookings/{booking_id}/cancel", headers=who.headers)
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        after = await post(http, driver, ride["id"], "after the cancellation")
        assert after.status_code == 201
        got = await next_frame(dws)
        assert got["event"] == "message.created" and got["data"] == after.json()

        # A sentinel on the ride channel, committed after the chat message: everything the
        # passenger receives before it shows what reached them after the cancellation.
        patch = await http.patch(
            f"/api/v1/rides/{ride['id']}", json={"notes": "sentinel"}, headers=driver.headers
        )
        assert patch.status_code == 200
        frames = []
        while True:
            frame = await next_frame(pws)
            frames.append(frame)
            if frame.get("event") == "ride.updated":
                break
        assert {"type": "unsubscribed", "channel": channel, "reason": "forbidden"} in frames
        assert [f for f in frames if f.get("channel") == channel] == [
            {"type": "unsubscribed", "channel": channel, "reason": "forbidden"}
        ], frames

        # And the former member is now an outsider everywhere.
        sent = await pws.request({"op": "send", "channel": channel, "body": "still here?"})
        assert sent["type"] == "error" and sent["code"] == "forbidden"
        sub = await pws.request({"op": "subscribe", "channel": channel})
        assert sub["type"] == "error" and sub["code"] == "forbidden"
    assert_error(
        await http.get(messages_url(ride["id"]), headers=passenger.headers), 403, "forbidden"
    )
    assert [m["body"] for m in await history(http, driver, ride["id"])] == [
        "after the cancellation",
        "before",
    ]


async def test_a_passenger_confirmed_again_can_rejoin_the_chat(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    channel = chat(ride["id"])
    first = (await http.get("/api/v1/bookings", headers=passenger.headers)).json()["items"][0]
    async with ws_connect(live.ws_url, passenger.access_token) as pws:
        await joined(pws, channel)
        cancel = await http.post(
            f"/api/v1/bookings/{first['id']}/cancel", headers=passenger.headers
        )
        assert cancel.status_code == 200
        assert await next_frame(pws) == {
            "type": "unsubscribed",
            "channel": channel,
            "reason": "forbidden",
        }
        again = await book(http, passenger, ride["id"])
        assert again.status_code == 201, again.text
        confirm = f"/api/v1/bookings/{again.json()['id']}/confirm"
        assert (await http.post(confirm, headers=driver.headers)).status_code == 200
        await pws.send({"op": "subscribe", "channel": channel})
        assert (await next_frame(pws))["type"] == "subscribed"
        back = await post(http, driver, ride["id"], "Welcome back")
        assert back.status_code == 201
        event = await next_frame(pws)
        assert event["event"] == "message.created" and event["data"] == back.json()


async def test_cancelling_the_ride_ends_every_passengers_chat(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    driver, alice, bob = await signup(http), await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, alice, bob)
    channel = chat(ride["id"])
    async with (
        ws_connect(live.ws_url, alice.access_token) as aws,
        ws_connect(live.ws_url, bob.access_token) as bws,
    ):
        await joined(aws, channel)
        await joined(bws, channel)
        cancel = await http.post(f"/api/v1/rides/{ride['id']}/cancel", headers=driver.headers)
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        for ws in (aws, bws):
            assert await next_frame(ws) == {
                "type": "unsubscribed",
                "channel": channel,
                "reason": "forbidden",
            }
    for p in (alice, bob):
        assert_error(await http.get(messages_url(ride["id"]), headers=p.headers), 403, "forbidden")
    # The driver is still a member of the chat.
    assert await history(http, driver, ride["id"]) == []


async def test_no_message_committed_after_the_revocation_reaches_the_former_member(
    live: LiveServer, http: httpx.AsyncClient, db_conn: asyncpg.Connection
) -> None:
    """Messages race the cancellation; the passenger gets exactly those committed before it
    (each event records the channel's ACL version it was committed under), in order."""
    driver, passenger = await signup(http), await signup(http)
    ride = await confirmed_ride(http, driver, passenger)
    channel = chat(ride["id"])
    booking_id = (await http.get("/api/v1/bookings", headers=passenger.headers)).json()["items"][0][
        "id"
    ]
    async with (
        ws_connect(live.ws_url, driver.access_token) as dws,
        ws_connect(live.ws_url, passenger.access_token) as pws,
    ):
        await joined(dws, channel)
        await joined(pws, channel, f"ride:{ride['id']}")

        async def cancel() -> httpx.Response:
            await asyncio.sleep(0.01)
            return await http.post(
                f"/api/v1/bookings/{booking_id}/cancel", headers=passenger.headers
            )

        sends = [post(http, driver, ride["id"], f"race {i}") for i in range(30)]
        *posted, cancelled = await asyncio.gather(*sends, cancel())
        assert cancelled.status_code == 200
        assert [p.status_code for p in posted] == [201] * 30
        driver_got = [(await next_frame(dws))["seq"] for _ in range(30)]
        assert driver_got == sorted(driver_got)

        patch = await http.patch(
            f"/api/v1/rides/{ride['id']}", json={"notes": "sentinel"}, headers=driver.headers
        )
        assert patch.status_code == 200
        frames = []
        while True:
            frame = await next_frame(pws)
            if frame.get("event") == "ride.updated":
                break
            frames.append(frame)
    rows = await db_conn.fetch(
        "SELECT seq, acl_version FROM events WHERE channel = $1 ORDER BY seq", channel
    )
    before = [r["seq"] for r in rows if r["acl_version"] == 0]
    chat_frames = [f for f in frames if f.get("channel") == channel]
    assert chat_frames[-1] == {"type": "unsubscribed", "channel": channel, "reason": "forbidden"}
    assert [f["seq"] for f in chat_frames[:-1]] == before
    assert len(rows) == 30 and driver_got == [r["seq"] for r in rows]


async def test_history_next_cursor_pages_back(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await confirmed_ride(client, driver, passenger)
    for i in range(5):
        assert (await post(client, driver, ride["id"], f"m{i}")).status_code == 201
    url = f"/api/v1/rides/{ride['id']}/messages"
    first = (await client.get(url, params={"limit": 2}, headers=passenger.headers)).json()
    assert [m["body"] for m in first["items"]] == ["m4", "m3"]
    second = (
        await client.get(
            url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=passenger.headers
        )
    ).json()
    assert [m["body"] for m in second["items"]] == ["m2", "m1"]
