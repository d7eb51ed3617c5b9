"""IDOR matrix: for every id in a path, a user cannot act on objects that are not theirs,
over REST and over the socket (PROTOCOL.md sections 1 and 3)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup
from tests.live import LiveServer, ws_connect


async def get_ride(client: httpx.AsyncClient, who: Account, ride_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/rides/{ride_id}", headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def booking_status(client: httpx.AsyncClient, driver: Account, ride_id: int) -> list[str]:
    r = await client.get(f"/api/v1/rides/{ride_id}/bookings", headers=driver.headers)
    assert r.status_code == 200, r.text
    return [b["status"] for b in r.json()["items"]]


async def test_only_the_driver_changes_a_ride(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver)
    booking = (await book(client, passenger, ride["id"])).json()
    confirm = f"/api/v1/bookings/{booking['id']}/confirm"
    assert (await client.post(confirm, headers=driver.headers)).status_code == 200
    url = f"/api/v1/rides/{ride['id']}"
    before = await get_ride(client, stranger, ride["id"])
    for other in (stranger, passenger):  # a confirmed passenger is no more the driver
        patch = await client.patch(url, json={"notes": "hijacked"}, headers=other.headers)
        assert_error(patch, 403, "forbidden")
        conditional = await client.patch(
            url, json={"price": 1}, headers={**other.headers, "If-Match": '"1"'}
        )
        assert_error(conditional, 403, "forbidden")
        for action in ("cancel", "start", "complete"):  # 403 before 409 (complete)
            r = await client.post(f"{url}/{action}", headers=other.headers)
            assert_error(r, 403, "forbidden")
    assert await get_ride(client, driver, ride["id"]) == before
    # The driver cannot hand the ride to someone else either.
    hand_over = await client.patch(url, json={"driver_id": stranger.id}, headers=driver.headers)
    assert_error(hand_over, 422, "validation_error")
    assert (await get_ride(client, driver, ride["id"]))["driver_id"] == driver.id
    # Unknown ids are 404 whoever asks.
    for action in ("cancel", "start", "complete"):
        r = await client.post(f"/api/v1/rides/999999/{action}", headers=stranger.headers)
        assert_error(r, 404, "not_found")


async def test_only_the_driver_confirms_or_rejects_a_booking(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    other_driver = await signup(client)
    await make_ride(client, other_driver)  # a driver, but of another ride
    ride = await make_ride(client, driver)
    booking = (await book(client, passenger, ride["id"])).json()
    for action in ("confirm", "reject"):
        url = f"/api/v1/bookings/{booking['id']}/{action}"
        for who in (stranger, other_driver, passenger):  # the passenger cannot confirm their own
            assert_error(await client.post(url, headers=who.headers), 403, "forbidden")
        r = await client.post(f"/api/v1/bookings/999999/{action}", headers=stranger.headers)
        assert_error(r, 404, "not_found")
    assert await booking_status(client, driver, ride["id"]) == ["pending"]
    assert (await get_ride(client, driver, ride["id"]))["seats_available"] == 3
    ok = await client.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed"


async def test_only_the_passenger_or_the_driver_cancels_a_booking(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    other_passenger = await signup(client)
    ride = await make_ride(client, driver, instant_booking=True)
    booking = (await book(client, passenger, ride["id"])).json()
    assert (await book(client, other_passenger, ride["id"])).status_code == 201
    url = f"/api/v1/bookings/{booking['id']}/cancel"
    for who in (stranger, other_passenger):  # a fellow passenger is a stranger to this booking
        assert_error(await client.post(url, headers=who.headers), 403, "forbidden")
    assert_error(
        await client.post("/api/v1/bookings/999999/cancel", headers=stranger.headers),
        404,
        "not_found",
    )
    assert await booking_status(client, driver, ride["id"]) == ["confirmed", "confirmed"]
    assert (await get_ride(client, driver, ride["id"]))["seats_available"] == 1


async def test_only_the_driver_lists_a_rides_bookings(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver)
    assert (await book(client, passenger, ride["id"])).status_code == 201
    url = f"/api/v1/rides/{ride['id']}/bookings"
    for who in (stranger, passenger):
        assert_error(await client.get(url, headers=who.headers), 403, "forbidden")
    assert_error(
        await client.get("/api/v1/rides/999999/bookings", headers=stranger.headers),
        404,
        "not_found",
    )
    assert_error(await client.get(url), 401, "unauthorized")
    assert await booking_status(client, driver, ride["id"]) == ["pending"]


async def test_my_bookings_lists_only_the_callers_own(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    one = await make_ride(client, driver)
    two = await make_ride(client, driver)
    mine = [(await book(client, passenger, r["id"])).json() for r in (one, two)]
    theirs = (await book(client, stranger, one["id"])).json()

    async def listed(who: Account) -> list[int]:
        r = await client.get("/api/v1/bookings", headers=who.headers)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert all(b["passenger_id"] == who.id for b in items), items
        return [b["id"] for b in items]

    assert await listed(passenger) == [mine[1]["id"], mine[0]["id"]]
    assert await listed(stranger) == [theirs["id"]]
    assert await listed(driver) == []  # bookings on the driver's rides are not the driver's own
    # Paging through one's own bookings never reaches another's.
    page = await client.get("/api/v1/bookings", params={"limit": 1}, headers=passenger.headers)
    cursor = page.json()["next_cursor"]
    rest = await client.get(
        "/api/v1/bookings", params={"limit": 10, "cursor": cursor}, headers=passenger.headers
    )
    assert [b["id"] for b in rest.json()["items"]] == [mine[0]["id"]]
    assert_error(await client.get("/api/v1/bookings"), 401, "unauthorized")


async def test_chat_is_closed_to_non_members(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver, instant_booking=True)
    assert (await book(client, passenger, ride["id"])).status_code == 201
    url = f"/api/v1/rides/{ride['id']}/messages"
    assert (
        await client.post(url, json={"body": "private"}, headers=driver.headers)
    ).status_code == 201
    assert_error(await client.get(url, headers=stranger.headers), 403, "forbidden")
    post = await client.post(url, json={"body": "let me in"}, headers=stranger.headers)
    assert_error(post, 403, "forbidden")
    # The ride itself stays public.
    assert (await get_ride(client, stranger, ride["id"]))["id"] == ride["id"]
    history = await client.get(url, headers=passenger.headers)
    assert [m["body"] for m in history.json()["items"]] == ["private"]


async def test_notifications_are_private(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver)
    assert (await book(client, passenger, ride["id"])).status_code == 201
    listed = await client.get("/api/v1/notifications", headers=driver.headers)
    (note,) = listed.json()["items"]
    read = f"/api/v1/notifications/{note['id']}/read"
    for who in (stranger, passenger):
        assert_error(await client.post(read, headers=who.headers), 403, "forbidden")
        r = await client.get("/api/v1/notifications", headers=who.headers)
        assert note["id"] not in [n["id"] for n in r.json()["items"]]
    # Nobody's read-all touches another user's notifications.
    assert (
        await client.post("/api/v1/notifications/read-all", headers=stranger.headers)
    ).json() == {"updated": 0}
    unread = await client.get("/api/v1/notifications?unread=true", headers=driver.headers)
    assert [n["id"] for n in unread.json()["items"]] == [note["id"]]


async def test_public_profile_hides_private_fields(
    client: httpx.AsyncClient, passenger: Account, stranger: Account
) -> None:
    r = await client.get(f"/api/v1/users/{passenger.id}", headers=stranger.headers)
    assert r.status_code == 200
    assert set(r.json()) == {
        "id",
        "display_name",
        "bio",
        "is_verified",
        "rating_avg",
        "rating_count",
    }
    # Only an admin verifies users; nobody verifies themselves or another.
    for target in (passenger, stranger):
        verify = f"/api/v1/admin/users/{target.id}/verify"
        assert_error(await client.post(verify, headers=stranger.headers), 403, "forbidden")
    assert (await client.get(f"/api/v1/users/{stranger.id}", headers=stranger.headers)).json()[
        "is_verified"
    ] is False


async def test_rest_replay_follows_the_subscription_rules(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver, instant_booking=True)
    assert (await book(client, passenger, ride["id"])).status_code == 201

    def events(channel: str) -> str:
        return f"/api/v1/channels/{channel}/events"

    for channel in (f"user:{passenger.id}", f"user:{driver.id}", f"ride:{ride['id']}:chat"):
        r = await client.get(events(channel), headers=stranger.headers)
        assert_error(r, 403, "forbidden")
    assert_error(
        await client.get(events(f"user:{driver.id}"), headers=passenger.headers), 403, "forbidden"
    )
    public = await client.get(events(f"ride:{ride['id']}"), headers=stranger.headers)
    assert public.status_code == 200
    assert [e["event"] for e in public.json()["items"]] == ["booking.confirmed"]
    own = await client.get(events(f"user:{passenger.id}"), headers=passenger.headers)
    assert own.status_code == 200 and own.json()["items"]


# Regression (fixed in e91727f): an id beyond PostgreSQL's bigint (>= 2**63) in the path was a 500
# internal_error on every endpoint below (asyncpg cannot encode it), and so was such a `before`
# on the chat history; it names no object, so 404 not_found (or 422 on the parameter) is right.
async def test_ids_beyond_bigint_are_not_found_not_a_server_error(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, instant_booking=True)
    assert (await book(client, passenger, ride["id"])).status_code == 201
    big = 2**63
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/api/v1/rides/{big}", None),
        ("PATCH", f"/api/v1/rides/{big}", {"notes": "x"}),
        ("POST", f"/api/v1/rides/{big}/cancel", None),
        ("POST", f"/api/v1/rides/{big}/bookings", {"seats": 1}),
        ("GET", f"/api/v1/rides/{big}/bookings", None),
        ("GET", f"/api/v1/rides/{big}/messages", None),
        ("POST", f"/api/v1/rides/{big}/messages", {"body": "hi"}),
        ("GET", f"/api/v1/rides/{ride['id']}/messages?before={big}", None),
        ("POST", f"/api/v1/rides/{big}/reviews", {"target_id": driver.id, "stars": 5}),
        ("POST", f"/api/v1/bookings/{big}/confirm", None),
        ("POST", f"/api/v1/bookings/{big}/cancel", None),
        ("POST", f"/api/v1/notifications/{big}/read", None),
        ("GET", f"/api/v1/users/{big}", None),
        ("GET", f"/api/v1/users/{big}/reviews", None),
    ]
    failures = []
    for method, url, body in requests:
        r = await client.request(method, url, json=body, headers=passenger.headers)
        if r.status_code not in (404, 422):
            failures.append((method, url, r.status_code))
        else:
            assert_error(
                r, r.status_code, "not_found" if r.status_code == 404 else "validation_error"
            )
    assert failures == []


async def test_socket_subscriptions_follow_ownership_and_membership(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.http) as http:
        driver, passenger, stranger = await signup(http), await signup(http), await signup(http)
        ride = await make_ride(http, driver, instant_booking=True)
        assert (await book(http, passenger, ride["id"])).status_code == 201
        rid = ride["id"]
        async with ws_connect(live.ws_url, stranger.access_token) as ws:
            await ws.expect("welcome")
            refused = [f"user:{passenger.id}", f"user:{driver.id}", f"ride:{rid}:chat"]
            for i, channel in enumerate(refused):
                frame = await ws.request({"op": "subscribe", "channel": channel, "id": i})
                assert frame == {
                    "type": "error",
                    "id": i,
                    "code": "forbidden",
                    "message": frame.get("message"),
                }, frame
                assert frame["message"]
            missing = await ws.request({"op": "subscribe", "channel": "ride:999999:chat"})
            assert missing["type"] == "error" and missing["code"] == "not_found"
            missing = await ws.request({"op": "subscribe", "channel": "ride:999999"})
            assert missing["type"] == "error" and missing["code"] == "not_found"
            for channel in (f"ride:{rid}", "rides", f"user:{stranger.id}"):
                ack = await ws.request({"op": "subscribe", "channel": channel})
                assert ack["type"] == "subscribed" and ack["channel"] == channel, ack

            # The refused channels really deliver nothing to the stranger; the public ride
            # channel does. A chat message and a passenger-side cancel happen, then a sentinel.
            msg = await http.post(
                f"/api/v1/rides/{rid}/messages", json={"body": "secret"}, headers=driver.headers
            )
            assert msg.status_code == 201
            patch = await http.patch(
                f"/api/v1/rides/{rid}", json={"notes": "sentinel"}, headers=driver.headers
            )
            assert patch.status_code == 200
            seen = []
            while True:
                frame = await ws.recv()
                seen.append(frame)
                if frame.get("channel") == f"ride:{rid}" and frame.get("event") == "ride.updated":
                    break
            channels = {f.get("channel") for f in seen}
            assert channels <= {f"ride:{rid}", "rides"}, seen
            assert not any(f.get("event") == "message.created" for f in seen)
