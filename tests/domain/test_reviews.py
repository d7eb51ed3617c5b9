"""Reviews: only after a ride is completed, only between its participants, once per
(ride, author, target); exact ratings under concurrency (PROTOCOL.md section 1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from server.app import create_app
from server.config import Settings
from tests import services
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup

REVIEW_KEYS = {"id", "ride_id", "author_id", "target_id", "stars", "comment", "created_at"}


async def ride_with(
    client: httpx.AsyncClient, driver: Account, *passengers: Account, **fields: Any
) -> dict[str, Any]:
    """A scheduled ride on which every passenger holds a confirmed booking."""
    ride = await make_ride(
        client, driver, seats_total=max(len(passengers), 1), instant_booking=True, **fields
    )
    for p in passengers:
        r = await book(client, p, ride["id"])
        assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text
    return ride


async def finish(client: httpx.AsyncClient, driver: Account, ride: dict[str, Any]) -> None:
    for action in ("start", "complete"):
        r = await client.post(f"/api/v1/rides/{ride['id']}/{action}", headers=driver.headers)
        assert r.status_code == 200, r.text


async def completed_ride(
    client: httpx.AsyncClient, driver: Account, *passengers: Account
) -> dict[str, Any]:
    ride = await ride_with(client, driver, *passengers)
    await finish(client, driver, ride)
    return ride


async def review(
    client: httpx.AsyncClient, author: Account, ride_id: int, target_id: int, **body: Any
) -> httpx.Response:
    payload: dict[str, Any] = {"target_id": target_id, "stars": 5}
    payload.update(body)
    return await client.post(
        f"/api/v1/rides/{ride_id}/reviews", json=payload, headers=author.headers
    )


async def profile(client: httpx.AsyncClient, who: Account, user_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/users/{user_id}", headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_reviews_open_once_the_ride_is_completed(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await ride_with(client, driver, passenger)
    url = f"/api/v1/rides/{ride['id']}"
    assert_error(await review(client, passenger, ride["id"], driver.id), 409, "conflict")
    assert (await client.post(url + "/start", headers=driver.headers)).status_code == 200
    assert_error(await review(client, passenger, ride["id"], driver.id), 409, "conflict")
    assert_error(await review(client, driver, ride["id"], passenger.id), 409, "conflict")
    assert (await client.post(url + "/complete", headers=driver.headers)).status_code == 200

    r = await review(client, passenger, ride["id"], driver.id, stars=4, comment="Smooth ride")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == REVIEW_KEYS
    assert (body["ride_id"], body["author_id"], body["target_id"]) == (
        ride["id"],
        passenger.id,
        driver.id,
    )
    assert body["stars"] == 4 and body["comment"] == "Smooth ride"
    assert datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).tzinfo is not None
    driver_profile = await profile(client, passenger, driver.id)
    assert driver_profile["rating_count"] == 1 and driver_profile["rating_avg"] == 4.0


async def test_a_cancelled_ride_is_never_reviewable(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await ride_with(client, driver, passenger)
    cancel = await client.post(f"/api/v1/rides/{ride['id']}/cancel", headers=driver.headers)
    assert cancel.status_code == 200
    # Cancelling the ride cancelled the booking too: the passenger is no participant any more.
    assert_error(await review(client, passenger, ride["id"], driver.id), 403, "forbidden")
    assert_error(await review(client, driver, ride["id"], passenger.id), 422, "validation_error")
    assert (await profile(client, driver, passenger.id))["rating_count"] == 0


async def test_only_participants_review_each_other(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    pending, cancelled = await signup(client), await signup(client)
    ride = await make_ride(client, driver, seats_total=3)
    for p in (passenger, pending, cancelled):
        assert (await book(client, p, ride["id"])).status_code == 201
    bookings = (
        await client.get(f"/api/v1/rides/{ride['id']}/bookings", headers=driver.headers)
    ).json()["items"]
    by_passenger = {b["passenger_id"]: b["id"] for b in bookings}
    for p in (passenger, cancelled):
        confirm = f"/api/v1/bookings/{by_passenger[p.id]}/confirm"
        assert (await client.post(confirm, headers=driver.headers)).status_code == 200
    cancel = f"/api/v1/bookings/{by_passenger[cancelled.id]}/cancel"
    assert (await client.post(cancel, headers=cancelled.headers)).status_code == 200
    await finish(client, driver, ride)

    for outsider in (stranger, pending, cancelled):  # not the driver, not confirmed at the end
        assert_error(await review(client, outsider, ride["id"], driver.id), 403, "forbidden")
    for target in (stranger.id, pending.id, cancelled.id, passenger.id, 999999):
        author = passenger if target == passenger.id else driver  # self, or a non-participant
        error = assert_error(
            await review(client, author, ride["id"], target), 422, "validation_error"
        )
        assert "body.target_id" in [d["field"] for d in error["details"]]
    assert_error(await review(client, driver, ride["id"], driver.id), 422, "validation_error")
    assert_error(await review(client, stranger, 999999, driver.id), 404, "not_found")
    no_token = await client.post(
        f"/api/v1/rides/{ride['id']}/reviews", json={"target_id": driver.id, "stars": 5}
    )
    assert_error(no_token, 401, "unauthorized")
    for who in (driver, passenger, stranger, pending, cancelled):
        assert (await profile(client, driver, who.id))["rating_count"] == 0


async def test_once_per_ride_author_and_target_in_both_directions(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    other = await signup(client)
    ride = await completed_ride(client, driver, passenger, other)
    assert (await review(client, passenger, ride["id"], driver.id, stars=5)).status_code == 201
    assert (await review(client, driver, ride["id"], passenger.id, stars=3)).status_code == 201
    assert (await review(client, driver, ride["id"], other.id, stars=2)).status_code == 201
    assert (await review(client, other, ride["id"], driver.id, stars=4)).status_code == 201
    again = await review(client, passenger, ride["id"], driver.id, stars=1, comment="changed")
    assert_error(again, 409, "conflict")
    assert_error(await review(client, driver, ride["id"], passenger.id), 409, "conflict")
    # The same pair on another completed ride is a new review.
    second = await completed_ride(client, driver, passenger)
    assert (await review(client, passenger, second["id"], driver.id, stars=2)).status_code == 201

    d = await profile(client, passenger, driver.id)
    assert d["rating_count"] == 3 and d["rating_avg"] == round((5 + 4 + 2) / 3, 2)
    p = await profile(client, driver, passenger.id)
    assert p["rating_count"] == 1 and p["rating_avg"] == 3.0  # the refused 409s changed nothing


async def test_stars_and_body_validation(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await completed_ride(client, driver, passenger)
    url = f"/api/v1/rides/{ride['id']}/reviews"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"target_id": driver.id, "stars": 0}, "body.stars"),
        ({"target_id": driver.id, "stars": 6}, "body.stars"),
        ({"target_id": driver.id, "stars": -1}, "body.stars"),
        ({"target_id": driver.id, "stars": 4.5}, "body.stars"),
        ({"target_id": driver.id, "stars": None}, "body.stars"),
        ({"target_id": driver.id}, "body.stars"),
        ({"stars": 5}, "body.target_id"),
        ({"target_id": driver.id, "stars": 5, "comment": "x" * 2001}, "body.comment"),
    ]
    for payload, field in bad:
        error = assert_error(
            await client.post(url, json=payload, headers=passenger.headers),
            422,
            "validation_error",
        )
        assert field in [d["field"] for d in error["details"]], (payload, error)
    # 422 for a malformed body comes before 404 for an unknown ride.
    assert_error(
        await client.post(
            "/api/v1/rides/999999/reviews",
            json={"target_id": 1, "stars": 9},
            headers=driver.headers,
        ),
        422,
        "validation_error",
    )
    assert (await profile(client, passenger, driver.id))["rating_count"] == 0
    low = await review(client, passenger, ride["id"], driver.id, stars=1)
    high = await review(client, driver, ride["id"], passenger.id, stars=5, comment=None)
    assert low.status_code == high.status_code == 201
    assert low.json()["comment"] is None and high.json()["stars"] == 5


# Regression (fixed in e91727f): a NUL character ("\u0000") in `comment` was a 500 internal_error
# (PostgreSQL text cannot hold NUL; the DataError escaped) instead of a 422 validation_error.
async def test_a_nul_character_in_the_comment_is_a_validation_error(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await completed_ride(client, driver, passenger)
    nul = await review(client, passenger, ride["id"], driver.id, comment="ok\u0000")
    assert_error(nul, 422, "validation_error")
    assert (await profile(client, passenger, driver.id))["rating_count"] == 0


# Regression (fixed in e91727f): a `target_id` of 2**64 or more was a 500 internal_error instead
# of the 422 validation_error any other non-participant target gets: the Idempotency-Key
# fingerprint (`_digest` in server/rides/router.py, orjson.dumps) raised "TypeError: Integer
# exceeds 64-bit range" on every request, with or without a key.
async def test_a_target_id_beyond_64_bits_is_a_validation_error(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await completed_ride(client, driver, passenger)
    assert_error(await review(client, passenger, ride["id"], 2**63), 422, "validation_error")
    huge = await review(client, passenger, ride["id"], 2**64)
    assert_error(huge, 422, "validation_error")


async def test_user_reviews_are_listed_newest_first(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    riders = [passenger, *[await signup(client) for _ in range(3)]]
    ride = await completed_ride(client, driver, *riders)
    written = []
    for i, rider in enumerate(riders):
        r = await review(client, rider, ride["id"], driver.id, stars=i + 2, comment=f"#{i}")
        assert r.status_code == 201
        written.append(r.json())
    # A review of someone else never shows on the driver's list.
    assert (await review(client, driver, ride["id"], passenger.id)).status_code == 201

    url = f"/api/v1/users/{driver.id}/reviews"
    listed = await client.get(url, headers=stranger.headers)  # public to any signed-in user
    assert listed.status_code == 200
    assert listed.json() == {"items": list(reversed(written)), "next_cursor": None}

    pages, params = [], {"limit": "3"}
    while True:
        page = (await client.get(url, params=params, headers=stranger.headers)).json()
        pages.append([r["comment"] for r in page["items"]])
        if page["next_cursor"] is None:
            break
        params = {"limit": "3", "cursor": page["next_cursor"]}
    assert pages == [["#3", "#2", "#1"], ["#0"]]

    mine = await client.get(f"/api/v1/users/{passenger.id}/reviews", headers=passenger.headers)
    assert [r["author_id"] for r in mine.json()["items"]] == [driver.id]
    empty = await client.get(f"/api/v1/users/{stranger.id}/reviews", headers=driver.headers)
    assert empty.json() == {"items": [], "next_cursor": None}
    assert_error(
        await client.get("/api/v1/users/999999/reviews", headers=driver.headers), 404, "not_found"
    )
    assert_error(await client.get(url), 401, "unauthorized")


async def test_the_target_is_notified(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await completed_ride(client, driver, passenger)
    r = await review(client, passenger, ride["id"], driver.id, stars=5, comment="Great")
    assert r.status_code == 201
    notes = (await client.get("/api/v1/notifications", headers=driver.headers)).json()["items"]
    assert notes[0]["kind"] == "review.created" and notes[0]["read_at"] is None
    assert notes[0]["data"] == {"review": r.json()}
    author_notes = (await client.get("/api/v1/notifications", headers=passenger.headers)).json()[
        "items"
    ]
    assert "review.created" not in [n["kind"] for n in author_notes]


async def test_a_double_submitted_review_counts_once(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await completed_ride(client, driver, passenger)
    answers = await asyncio.gather(
        *(review(client, passenger, ride["id"], driver.id, stars=2) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * 5
    for a in answers:
        if a.status_code == 409:
            assert_error(a, 409, "conflict")
    d = await profile(client, passenger, driver.id)
    assert d["rating_count"] == 1 and d["rating_avg"] == 2.0


async def test_idempotency_key_replays_the_review(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await completed_ride(client, driver, passenger)
    key = {"Idempotency-Key": "review-1"}
    url = f"/api/v1/rides/{ride['id']}/reviews"
    body = {"target_id": driver.id, "stars": 4}
    first = await client.post(url, json=body, headers={**passenger.headers, **key})
    again = await client.post(url, json=body, headers={**passenger.headers, **key})
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    other = await client.post(url, json={**body, "stars": 1}, headers={**passenger.headers, **key})
    assert_error(other, 422, "validation_error")
    d = await profile(client, passenger, driver.id)
    assert d["rating_count"] == 1 and d["rating_avg"] == 4.0


async def _concurrent_reviews(client: httpx.AsyncClient) -> None:
    """20 passengers on three completed rides of one driver review the driver at once, while
    others read the driver's profile; the rating is exact afterwards."""
    driver = await signup(client)
    riders = [await signup(client) for _ in range(20)]
    rides = [
        await completed_ride(client, driver, *riders[0:8]),
        await completed_ride(client, driver, *riders[8:16]),
        await completed_ride(client, driver, *riders[16:20]),
    ]
    ride_of = {r.id: rides[i // 8]["id"] for i, r in enumerate(riders)}
    given = [5, 4, 5, 3, 5, 2, 4, 5, 1, 5, 4, 3, 5, 5, 4, 2, 5, 3, 4, 4]  # sum 78: avg 3.9
    stars = {r.id: given[i] for i, r in enumerate(riders)}
    assert (await profile(client, driver, driver.id))["rating_count"] == 0  # cached, if cached

    async def one(rider: Account) -> httpx.Response:
        return await review(client, rider, ride_of[rider.id], driver.id, stars=stars[rider.id])

    async def look(rider: Account) -> dict[str, Any]:
        return await profile(client, rider, driver.id)

    reviews, _ = await asyncio.gather(
        asyncio.gather(*(one(r) for r in riders)), asyncio.gather(*(look(r) for r in riders))
    )
    assert [a.status_code for a in reviews] == [201] * 20

    total = sum(stars.values())
    expected: dict[str, float] = {"rating_count": 20, "rating_avg": round(total / 20, 2)}
    for reader in (driver, riders[0]):
        got = await profile(client, reader, driver.id)
        assert {k: got[k] for k in expected} == expected
    for ride in rides:  # the driver summary on the ride shows the same
        detail = await client.get(f"/api/v1/rides/{ride['id']}", headers=riders[0].headers)
        assert {k: detail.json()["driver"][k] for k in expected} == expected
    # Search by driver rating sees the final average too.
    search: dict[str, str | float] = {
        "status": "completed",
        "min_driver_rating": expected["rating_avg"],
    }
    found = await client.get("/api/v1/rides", params=search, headers=riders[0].headers)
    assert sorted(r["id"] for r in found.json()["items"]) == sorted(r["id"] for r in rides)
    search["min_driver_rating"] = expected["rating_avg"] + 0.05
    found = await client.get("/api/v1/rides", params=search, headers=riders[0].headers)
    assert found.json()["items"] == []
    listed = await client.get(
        f"/api/v1/users/{driver.id}/reviews", params={"limit": 100}, headers=driver.headers
    )
    assert sorted(r["author_id"] for r in listed.json()["items"]) == sorted(r.id for r in riders)
    notes = await client.get("/api/v1/notifications", params={"limit": 100}, headers=driver.headers)
    assert [n["kind"] for n in notes.json()["items"]].count("review.created") == 20


async def test_rating_is_exact_after_20_concurrent_reviews(client: httpx.AsyncClient) -> None:
    await _concurrent_reviews(client)


@pytest.fixture
async def cached_client(
    settings_factory: Callable[..., Settings], redis: Redis, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with Redis (profile cache and broker) under a per-test prefix."""
    app = create_app(settings_factory(redis_url=services.REDIS_URL, redis_prefix=redis_prefix))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://kuda.test") as c:
            yield c


async def test_rating_is_exact_after_20_concurrent_reviews_with_the_profile_cache(
    cached_client: httpx.AsyncClient,
) -> None:
    await _concurrent_reviews(cached_client)
