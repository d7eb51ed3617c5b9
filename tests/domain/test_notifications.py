"""Notifications: which actions store one for whom, listing and read state, and the live
`notification.created` event on `user:{id}` (PROTOCOL.md sections 1 and 3)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx

from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup
from tests.live import LiveServer, ws_connect

NOTE_KEYS = {"id", "kind", "data", "created_at", "read_at"}


async def notes(
    client: httpx.AsyncClient, who: Account, **params: str | int
) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/notifications", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    for item in items:
        assert set(item) == NOTE_KEYS, item
    return items


async def kinds(client: httpx.AsyncClient, who: Account) -> list[str]:
    return [n["kind"] for n in await notes(client, who)]


async def act(client: httpx.AsyncClient, who: Account, path: str) -> dict[str, Any]:
    r = await client.post(f"/api/v1{path}", headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_booking_lifecycle_notifies_the_other_side(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver)
    requested = await book(client, passenger, ride["id"])
    assert requested.status_code == 201
    booking = requested.json()
    assert await kinds(client, driver) == ["booking.requested"]
    (note,) = await notes(client, driver)
    assert note["data"] == {"booking": booking} and note["read_at"] is None
    assert await kinds(client, passenger) == []  # the requester is not notified of their own act

    confirmed = await act(client, driver, f"/bookings/{booking['id']}/confirm")
    assert await kinds(client, passenger) == ["booking.confirmed"]
    assert (await notes(client, passenger))[0]["data"] == {"booking": confirmed}
    assert await kinds(client, driver) == ["booking.requested"]

    cancelled = await act(client, passenger, f"/bookings/{booking['id']}/cancel")
    assert await kinds(client, driver) == ["booking.cancelled", "booking.requested"]
    assert (await notes(client, driver))[0]["data"] == {"booking": cancelled}
    assert await kinds(client, passenger) == ["booking.confirmed"]


async def test_rejection_and_cancellation_by_the_driver_notify_the_passenger(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver)
    rejected_id = (await book(client, passenger, ride["id"])).json()["id"]
    rejected = await act(client, driver, f"/bookings/{rejected_id}/reject")
    assert await kinds(client, passenger) == ["booking.rejected"]
    assert (await notes(client, passenger))[0]["data"] == {"booking": rejected}

    other_id = (await book(client, stranger, ride["id"])).json()["id"]
    await act(client, driver, f"/bookings/{other_id}/confirm")
    cancelled = await act(client, driver, f"/bookings/{other_id}/cancel")
    assert await kinds(client, stranger) == ["booking.cancelled", "booking.confirmed"]
    assert (await notes(client, stranger))[0]["data"] == {"booking": cancelled}
    assert "booking.cancelled" not in await kinds(client, driver)  # the driver did it


async def test_instant_booking_notifies_both_sides(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, instant_booking=True)
    booking = (await book(client, passenger, ride["id"])).json()
    assert booking["status"] == "confirmed"
    for who in (driver, passenger):
        (note,) = await notes(client, who)
        assert note["kind"] == "booking.confirmed" and note["data"] == {"booking": booking}


async def test_ride_changes_and_cancellation_notify_confirmed_passengers(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    pending = await signup(client)
    ride = await make_ride(client, driver)
    booking_id = (await book(client, passenger, ride["id"])).json()["id"]
    await act(client, driver, f"/bookings/{booking_id}/confirm")
    assert (await book(client, pending, ride["id"])).json()["status"] == "pending"

    patched = await client.patch(
        f"/api/v1/rides/{ride['id']}", json={"notes": "Meet at gate 2"}, headers=driver.headers
    )
    assert patched.status_code == 200
    (changed,) = [n for n in await notes(client, passenger) if n["kind"] == "ride.updated"]
    assert changed["data"] == {"ride": patched.json()}
    assert await kinds(client, pending) == []
    assert await kinds(client, stranger) == []

    cancelled = await act(client, driver, f"/rides/{ride['id']}/cancel")
    latest = (await notes(client, passenger))[0]
    assert latest["kind"] == "ride.cancelled" and latest["data"] == {"ride": cancelled}
    assert await kinds(client, passenger) == ["ride.cancelled", "ride.updated", "booking.confirmed"]
    # A pending passenger is told their booking was cancelled.
    assert await kinds(client, pending) == ["booking.cancelled"]
    assert (await notes(client, pending))[0]["data"]["booking"]["status"] == "cancelled"
    assert await kinds(client, stranger) == []
    assert "ride.cancelled" not in await kinds(client, driver)


async def test_start_and_complete_notify_nobody_and_reviews_notify_the_target(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, instant_booking=True)
    assert (await book(client, passenger, ride["id"])).status_code == 201
    before = {who.id: await kinds(client, who) for who in (driver, passenger)}
    await act(client, driver, f"/rides/{ride['id']}/start")
    await act(client, driver, f"/rides/{ride['id']}/complete")
    assert {who.id: await kinds(client, who) for who in (driver, passenger)} == before

    r = await client.post(
        f"/api/v1/rides/{ride['id']}/reviews",
        json={"target_id": passenger.id, "stars": 5},
        headers=driver.headers,
    )
    assert r.status_code == 201
    latest = (await notes(client, passenger))[0]
    assert latest["kind"] == "review.created" and latest["data"] == {"review": r.json()}
    assert await kinds(client, driver) == before[driver.id]


async def test_listing_unread_filter_and_paging(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    riders = [await signup(client) for _ in range(5)]
    ride = await make_ride(client, driver, seats_total=5)
    for rider in riders:
        assert (await book(client, rider, ride["id"])).status_code == 201
    listed = await notes(client, driver)
    assert [n["data"]["booking"]["passenger_id"] for n in listed] == [
        r.id for r in reversed(riders)
    ]
    ids = [n["id"] for n in listed]
    assert ids == sorted(ids, reverse=True)
    stamps = [datetime.fromisoformat(n["created_at"].replace("Z", "+00:00")) for n in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert await notes(client, driver, unread="true") == listed
    assert await notes(client, driver, unread="false") == listed

    pages, params = [], {"limit": 2}
    while True:
        r = await client.get("/api/v1/notifications", params=params, headers=driver.headers)
        page = r.json()
        pages.append([n["id"] for n in page["items"]])
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "not-a-cursor"}, {"unread": "maybe"}):
        r = await client.get("/api/v1/notifications", params=bad, headers=driver.headers)
        assert_error(r, 422, "validation_error")
    assert_error(await client.get("/api/v1/notifications"), 401, "unauthorized")


async def test_read_one_is_idempotent_and_read_all_counts(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=3)
    for rider in (passenger, stranger, await signup(client)):
        assert (await book(client, rider, ride["id"])).status_code == 201
    listed = await notes(client, driver)
    assert len(listed) == 3
    target = listed[1]

    first = await client.post(f"/api/v1/notifications/{target['id']}/read", headers=driver.headers)
    assert first.status_code == 200
    read = first.json()
    assert set(read) == NOTE_KEYS and read["read_at"] is not None
    assert {k: read[k] for k in ("id", "kind", "data", "created_at")} == {
        k: target[k] for k in ("id", "kind", "data", "created_at")
    }
    again = await client.post(f"/api/v1/notifications/{target['id']}/read", headers=driver.headers)
    assert again.status_code == 200 and again.json() == read  # read_at is not moved
    unread = await notes(client, driver, unread="true")
    assert [n["id"] for n in unread] == [listed[0]["id"], listed[2]["id"]]
    assert [n for n in await notes(client, driver) if n["id"] == target["id"]] == [read]

    assert_error(
        await client.post(f"/api/v1/notifications/{target['id']}/read", headers=stranger.headers),
        403,
        "forbidden",
    )
    assert_error(
        await client.post("/api/v1/notifications/999999/read", headers=driver.headers),
        404,
        "not_found",
    )
    assert_error(
        await client.post(f"/api/v1/notifications/{target['id']}/read"), 401, "unauthorized"
    )

    # Another user's notifications are untouched by this user's read-all.
    passenger_before = await notes(client, passenger, unread="true")
    everything = await client.post("/api/v1/notifications/read-all", headers=driver.headers)
    assert everything.status_code == 200 and everything.json() == {"updated": 2}
    assert await notes(client, driver, unread="true") == []
    after = await notes(client, driver)
    assert all(n["read_at"] is not None for n in after)
    assert [n for n in after if n["id"] == target["id"]] == [read]  # its read_at stands
    nothing = await client.post("/api/v1/notifications/read-all", headers=driver.headers)
    assert nothing.json() == {"updated": 0}
    assert await notes(client, passenger, unread="true") == passenger_before
    assert_error(await client.post("/api/v1/notifications/read-all"), 401, "unauthorized")


async def test_concurrent_read_alls_count_each_notification_once(
    client: httpx.AsyncClient, driver: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=6)
    for _ in range(6):
        assert (await book(client, await signup(client), ride["id"])).status_code == 201
    answers = await asyncio.gather(
        *(client.post("/api/v1/notifications/read-all", headers=driver.headers) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json()["updated"] for a in answers) == 6
    assert await notes(client, driver, unread="true") == []


async def test_notifications_arrive_live_on_the_users_channel(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.http) as http:
        driver, passenger = await signup(http), await signup(http)
        ride = await make_ride(http, driver)
        async with (
            ws_connect(live.ws_url, driver.access_token) as dws,
            ws_connect(live.ws_url, passenger.access_token) as pws,
        ):
            for ws, who in ((dws, driver), (pws, passenger)):
                await ws.expect("welcome")
                ack = await ws.request({"op": "subscribe", "channel": f"user:{who.id}"})
                assert ack["type"] == "subscribed", ack

            booking = (await book(http, passenger, ride["id"])).json()
            confirm = f"/api/v1/bookings/{booking['id']}/confirm"
            assert (await http.post(confirm, headers=driver.headers)).status_code == 200
            patched = await http.patch(
                f"/api/v1/rides/{ride['id']}", json={"price": 300}, headers=driver.headers
            )
            assert patched.status_code == 200

            # driver: booking.requested event + its notification; passenger: booking.requested,
            # booking.confirmed and two notifications (confirmed, ride updated).
            driver_events = await dws.events(2)
            passenger_events = await pws.events(4)
            for ws, who, events in (
                (dws, driver, driver_events),
                (pws, passenger, passenger_events),
            ):
                channel = f"user:{who.id}"
                assert all(e["channel"] == channel for e in events), events
                seqs = [e["seq"] for e in events]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                live_notes = [e for e in events if e["event"] == "notification.created"]
                stored = await notes(http, who)
                assert [e["data"] for e in live_notes] == list(reversed(stored))
                assert (await ws.request({"op": "ping"}))["type"] == "pong"  # nothing more
            assert [
                e["data"]["kind"] for e in driver_events if e["event"] == "notification.created"
            ] == ["booking.requested"]
            assert [
                e["data"]["kind"] for e in passenger_events if e["event"] == "notification.created"
            ] == ["booking.confirmed", "ride.updated"]

            # Reading a notification is not an event; a later one still is.
            first = (await notes(http, driver))[0]
            read = f"/api/v1/notifications/{first['id']}/read"
            assert (await http.post(read, headers=driver.headers)).status_code == 200
            cancel = f"/api/v1/bookings/{booking['id']}/cancel"
            assert (await http.post(cancel, headers=passenger.headers)).status_code == 200
            tail = await dws.events(2)
            assert [e["event"] for e in tail] == ["booking.cancelled", "notification.created"]
            assert tail[1]["data"] == (await notes(http, driver))[0]
            assert tail[1]["data"]["kind"] == "booking.cancelled"
            assert tail[0]["seq"] == driver_events[-1]["seq"] + 1
