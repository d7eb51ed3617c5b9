from __future__ import annotations

import asyncio

import httpx

from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup


async def test_request_is_pending_and_holds_no_seats(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=2)
    r = await book(client, passenger, ride["id"], seats=2)
    assert r.status_code == 201
    booking = r.json()
    assert booking["status"] == "pending" and booking["seats"] == 2
    assert booking["passenger_id"] == passenger.id and booking["ride_id"] == ride["id"]
    detail = await client.get(f"/api/v1/rides/{ride['id']}", headers=passenger.headers)
    assert detail.json()["seats_available"] == 2


async def test_booking_refusals(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=2)
    assert_error(await book(client, driver, ride["id"]), 409, "conflict")
    assert_error(await book(client, passenger, ride["id"], seats=3), 409, "conflict")
    assert_error(await book(client, passenger, ride["id"], seats=0), 422, "validation_error")
    assert_error(await book(client, passenger, 999999), 404, "not_found")
    assert (await book(client, passenger, ride["id"])).status_code == 201
    assert_error(await book(client, passenger, ride["id"]), 409, "conflict")  # one active booking
    r = await client.post(
        f"/api/v1/rides/{ride['id']}/bookings", json={"seats": "two"}, headers=passenger.headers
    )
    assert_error(r, 422, "validation_error")
    assert_error(
        await client.post(f"/api/v1/rides/{ride['id']}/bookings", json={"seats": 1}),
        401,
        "unauthorized",
    )


async def test_confirm_checks_seats_again(client: httpx.AsyncClient, driver: Account) -> None:
    ride = await make_ride(client, driver, seats_total=3)
    first, second = await signup(client), await signup(client)
    b1 = (await book(client, first, ride["id"], seats=2)).json()
    b2 = (await book(client, second, ride["id"], seats=2)).json()
    assert_error(
        await client.post(f"/api/v1/bookings/{b1['id']}/confirm", headers=first.headers),
        403,
        "forbidden",
    )
    ok = await client.post(f"/api/v1/bookings/{b1['id']}/confirm", headers=driver.headers)
    assert ok.status_code == 200 and ok.json()["status"] == "confirmed"
    assert_error(
        await client.post(f"/api/v1/bookings/{b1['id']}/confirm", headers=driver.headers),
        409,
        "conflict",
    )
    assert_error(
        await client.post(f"/api/v1/bookings/{b2['id']}/confirm", headers=driver.headers),
        409,
        "conflict",
    )
    rejected = await client.post(f"/api/v1/bookings/{b2['id']}/reject", headers=driver.headers)
    assert rejected.json()["status"] == "rejected"
    assert (await book(client, second, ride["id"], seats=1)).status_code == 201  # may ask again
    detail = (await client.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)).json()
    assert detail["seats_available"] == 1
    assert_error(
        await client.post("/api/v1/bookings/999999/confirm", headers=driver.headers),
        404,
        "not_found",
    )


async def test_cancel_frees_seats_either_side(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=3, instant_booking=True)
    b = (await book(client, passenger, ride["id"], seats=2)).json()
    assert b["status"] == "confirmed"
    url = f"/api/v1/rides/{ride['id']}"
    assert (await client.get(url, headers=driver.headers)).json()["seats_available"] == 1
    assert_error(
        await client.post(f"/api/v1/bookings/{b['id']}/cancel", headers=stranger.headers),
        403,
        "forbidden",
    )
    c = await client.post(f"/api/v1/bookings/{b['id']}/cancel", headers=passenger.headers)
    assert c.json()["status"] == "cancelled" and c.json()["cancelled_by"] == passenger.id
    assert (await client.get(url, headers=driver.headers)).json()["seats_available"] == 3
    assert_error(
        await client.post(f"/api/v1/bookings/{b['id']}/cancel", headers=passenger.headers),
        409,
        "conflict",
    )
    again = (await book(client, passenger, ride["id"], seats=1)).json()
    by_driver = await client.post(f"/api/v1/bookings/{again['id']}/cancel", headers=driver.headers)
    assert by_driver.json()["cancelled_by"] == driver.id


async def test_cancelling_a_ride_cancels_its_bookings(
    client: httpx.AsyncClient, driver: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=3)
    p1, p2 = await signup(client), await signup(client)
    b1 = (await book(client, p1, ride["id"])).json()
    b2 = (await book(client, p2, ride["id"])).json()
    await client.post(f"/api/v1/bookings/{b1['id']}/confirm", headers=driver.headers)
    await client.post(f"/api/v1/rides/{ride['id']}/cancel", headers=driver.headers)
    mine1 = (await client.get("/api/v1/bookings", headers=p1.headers)).json()["items"]
    mine2 = (await client.get("/api/v1/bookings", headers=p2.headers)).json()["items"]
    assert [b["status"] for b in mine1] == ["cancelled"] and [b["id"] for b in mine2] == [b2["id"]]
    assert mine2[0]["status"] == "cancelled"
    assert_error(await book(client, p1, ride["id"]), 409, "conflict")


async def test_lists_of_bookings(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    rides = [await make_ride(client, driver) for _ in range(3)]
    for ride in rides:
        await book(client, passenger, ride["id"])
    page = (await client.get("/api/v1/bookings?limit=2", headers=passenger.headers)).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (
        await client.get(
            f"/api/v1/bookings?limit=2&cursor={page['next_cursor']}", headers=passenger.headers
        )
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert [b["ride_id"] for b in page["items"] + rest["items"]] == [
        r["id"] for r in reversed(rides)
    ]
    of_ride = await client.get(f"/api/v1/rides/{rides[0]['id']}/bookings", headers=driver.headers)
    assert [b["passenger_id"] for b in of_ride.json()["items"]] == [passenger.id]
    assert_error(
        await client.get(f"/api/v1/rides/{rides[0]['id']}/bookings", headers=passenger.headers),
        403,
        "forbidden",
    )
    assert_error(
        await client.get("/api/v1/bookings?cursor=garbage", headers=passenger.headers),
        422,
        "validation_error",
    )


async def test_idempotency_key(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=3)
    other = await make_ride(client, driver, seats_total=3)
    headers = {**passenger.headers, "Idempotency-Key": "book-42"}
    url = f"/api/v1/rides/{ride['id']}/bookings"
    first = await client.post(url, json={"seats": 1}, headers=headers)
    again = await client.post(url, json={"seats": 1}, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    changed = await client.post(url, json={"seats": 2}, headers=headers)
    assert_error(changed, 422, "validation_error")
    elsewhere = await client.post(
        f"/api/v1/rides/{other['id']}/bookings", json={"seats": 1}, headers=headers
    )
    assert_error(elsewhere, 422, "validation_error")  # same key, another request
    mine = (await client.get("/api/v1/bookings", headers=passenger.headers)).json()["items"]
    assert len(mine) == 1
    # Another user's identical key is another scope.
    stranger = await signup(client)
    own = await client.post(
        url, json={"seats": 1}, headers={**stranger.headers, "Idempotency-Key": "book-42"}
    )
    assert own.status_code == 201 and own.json()["id"] != first.json()["id"]


async def test_concurrent_requests_with_one_key_create_one_booking(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=3, instant_booking=True)
    headers = {**passenger.headers, "Idempotency-Key": "tap-tap-tap"}
    url = f"/api/v1/rides/{ride['id']}/bookings"
    results = await asyncio.gather(
        *(client.post(url, json={"seats": 1}, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in results} == {201}
    assert len({r.json()["id"] for r in results}) == 1
    detail = (await client.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)).json()
    assert detail["seats_available"] == 2


async def test_refusal_is_replayed_for_the_same_key(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, seats_total=1)
    headers = {**passenger.headers, "Idempotency-Key": "too-many"}
    url = f"/api/v1/rides/{ride['id']}/bookings"
    first = await client.post(url, json={"seats": 2}, headers=headers)
    assert_error(first, 409, "conflict")
    await client.patch(
        f"/api/v1/rides/{ride['id']}", json={"seats_total": 4}, headers=driver.headers
    )
    again = await client.post(url, json={"seats": 2}, headers=headers)
    assert again.status_code == 409 and again.json() == first.json()
