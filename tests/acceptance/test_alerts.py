"""PROTOCOL.md section 6, "Ride alerts (saved searches)", on two instances.

Every test uses place names of its own, so no other test's rides can match its alerts. A test
that expects no `ride.matched` publishes a matching "sentinel" ride last and reads the owner's
`user:{id}` events up to the sentinel's notification: events arrive in commit order, so a
notification for anything published before it would have come first."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Deployment, Frame, events_until, notification_of
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, signup
from tests.live import WsClient

pytestmark = pytest.mark.slow

ALERT_KEYS = {"id", "origin", "destination", "departure_from", "departure_to", "max_price",
              "min_seats", "created_at"}  # fmt: skip
MATCHED_KEYS = {"alert_id", "ride_id", "origin", "destination", "departure_at", "price",
                "seats_available"}  # fmt: skip


def place() -> str:
    return f"Town{uuid.uuid4().hex[:8]}"


def at(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def same_instant(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


async def create_alert(http: httpx.AsyncClient, owner: Account, **body: Any) -> dict[str, Any]:
    r = await http.post("/api/v1/alerts", json=body, headers=owner.headers)
    assert r.status_code == 201, r.text
    alert: dict[str, Any] = r.json()
    return alert


class Watch:
    """An alert owner's `user:{id}` socket, and a sentinel alert that ends every wait."""

    def __init__(self, ws: WsClient, owner: Account, sentinel: dict[str, Any]) -> None:
        self.ws, self.owner, self.sentinel = ws, owner, sentinel

    async def matched_until_sentinel(self, http: httpx.AsyncClient, driver: Account) -> list[Frame]:
        """Publish a ride matching the sentinel alert; the `ride.matched` events that came
        before its own."""
        ride = await make_ride(
            http, driver, origin=self.sentinel["origin"], destination=self.sentinel["destination"]
        )
        frames = await events_until(self.ws, notification_of("ride.matched", ride_id=ride["id"]))
        return [f for f in frames[:-1] if notification_of("ride.matched")(f)]

    async def next_matched(self, ride_id: int) -> Frame:
        frames = await events_until(self.ws, notification_of("ride.matched", ride_id=ride_id))
        return frames[-1]


@pytest.fixture
async def owner(a: httpx.AsyncClient) -> Account:
    return await signup(a, display_name="Alert Owner")


@pytest.fixture
async def driver(b: httpx.AsyncClient) -> Account:
    return await signup(b, display_name="Driver")


@pytest.fixture
async def watch(kuda: Deployment, a: httpx.AsyncClient, owner: Account) -> AsyncIterator[Watch]:
    sentinel = await create_alert(a, owner, origin=place(), destination=place())
    async with kuda.socket(kuda.a, owner.access_token) as ws:
        ack = await ws.request({"op": "subscribe", "channel": f"user:{owner.id}"})
        assert ack["type"] == "subscribed", ack
        yield Watch(ws, owner, sentinel)


# --- the REST surface ----------------------------------------------------------------------


async def test_creating_an_alert_is_201_with_exactly_the_contracts_fields(
    a: httpx.AsyncClient, owner: Account
) -> None:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_from": at(1),
            "departure_to": at(5), "max_price": 300, "min_seats": 2}  # fmt: skip
    alert = await create_alert(a, owner, **body)
    assert set(alert) == ALERT_KEYS
    assert isinstance(alert["id"], int)
    assert (alert["origin"], alert["destination"]) == ("Innopolis", "Kazan")
    assert same_instant(alert["departure_from"], body["departure_from"])
    assert same_instant(alert["departure_to"], body["departure_to"])
    assert (alert["max_price"], alert["min_seats"]) == (300, 2)
    created = datetime.fromisoformat(alert["created_at"])
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=5)


async def test_an_alert_without_its_optional_fields_has_them_null(
    a: httpx.AsyncClient, owner: Account
) -> None:
    alert = await create_alert(a, owner, origin="Innopolis", destination="Kazan")
    assert set(alert) == ALERT_KEYS
    assert [alert[k] for k in ("departure_from", "departure_to", "max_price", "min_seats")] == [
        None
    ] * 4


async def test_an_alert_without_a_destination_is_422(a: httpx.AsyncClient, owner: Account) -> None:
    r = await a.post("/api/v1/alerts", json={"origin": "Innopolis"}, headers=owner.headers)
    error = assert_error(r, 422, "validation_error")
    assert "destination" in str(error["details"])


async def test_listing_alerts_is_a_list_page_of_mine_only(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account
) -> None:
    mine = [await create_alert(a, owner, origin=place(), destination=place()) for _ in range(2)]
    await create_alert(b, driver, origin=place(), destination=place())
    r = await b.get("/api/v1/alerts", headers=owner.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert set(page) == {"items", "next_cursor"}
    assert sorted(x["id"] for x in page["items"]) == sorted(x["id"] for x in mine)
    assert all(set(x) == ALERT_KEYS for x in page["items"])


async def test_the_alert_list_pages_through_its_cursor(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account
) -> None:
    made = {
        (await create_alert(a, owner, origin=place(), destination=place()))["id"] for _ in range(5)
    }
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):
        page = (await b.get("/api/v1/alerts", params=params, headers=owner.headers)).json()
        assert len(page["items"]) <= 2
        seen += [x["id"] for x in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(made)


async def test_deleting_my_alert_is_204_and_someone_elses_is_404(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account
) -> None:
    alert = await create_alert(a, owner, origin=place(), destination=place())
    assert_error(
        await b.delete(f"/api/v1/alerts/{alert['id']}", headers=driver.headers), 404, "not_found"
    )
    r = await b.delete(f"/api/v1/alerts/{alert['id']}", headers=owner.headers)
    assert r.status_code == 204, r.text
    listed = (await a.get("/api/v1/alerts", headers=owner.headers)).json()["items"]
    assert alert["id"] not in [x["id"] for x in listed]
    assert_error(
        await a.delete(f"/api/v1/alerts/{alert['id']}", headers=owner.headers), 404, "not_found"
    )


async def test_the_21st_alert_is_409(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account
) -> None:
    alerts = [
        await create_alert(a if n % 2 else b, owner, origin=place(), destination="Kazan")
        for n in range(20)
    ]
    body = {"origin": place(), "destination": "Kazan"}
    assert_error(await b.post("/api/v1/alerts", json=body, headers=owner.headers), 409, "conflict")
    assert (await a.delete(f"/api/v1/alerts/{alerts[0]['id']}", headers=owner.headers)).is_success
    assert (await b.post("/api/v1/alerts", json=body, headers=owner.headers)).status_code == 201


# --- matching --------------------------------------------------------------------------------


async def test_a_published_matching_ride_notifies_the_owner_with_the_contracts_data(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    origin, destination = place(), place()
    alert = await create_alert(a, owner, origin=origin, destination=destination)
    ride = await make_ride(b, driver, origin=origin, destination=destination, price=250)
    frame = await watch.next_matched(ride["id"])
    note = frame["data"]
    assert note["kind"] == "ride.matched" and note["read_at"] is None
    assert set(note) == {"id", "kind", "data", "created_at", "read_at"}
    data = note["data"]
    assert set(data) == MATCHED_KEYS
    assert (data["alert_id"], data["ride_id"]) == (alert["id"], ride["id"])
    assert (data["origin"], data["destination"]) == (origin, destination)
    assert same_instant(data["departure_at"], ride["departure_at"])
    assert (data["price"], data["seats_available"]) == (250, ride["seats_available"])
    stored = (await b.get("/api/v1/notifications", headers=owner.headers)).json()["items"]
    assert [n["data"] for n in stored if n["kind"] == "ride.matched"] == [data]


async def test_origin_and_destination_match_as_case_insensitive_substrings(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    origin, destination = place(), place()
    await create_alert(a, owner, origin=origin[2:].upper(), destination=destination[:-2].lower())
    ride = await make_ride(
        b, driver, origin=f"Old {origin} Square", destination=f"{destination} Station"
    )
    assert (await watch.next_matched(ride["id"]))["data"]["data"]["ride_id"] == ride["id"]


async def test_a_ride_on_another_route_does_not_match(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    origin, destination = place(), place()
    await create_alert(a, owner, origin=origin, destination=destination)
    await make_ride(b, driver, origin=origin, destination=place())
    await make_ride(b, driver, origin=place(), destination=destination)
    await make_ride(b, driver, origin=destination, destination=origin)
    assert await watch.matched_until_sentinel(b, driver) == []


async def test_a_shared_taxi_matches_like_any_ride(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, min_seats=3)
    taxi = await make_ride(b, driver, **route, kind="taxi_share", seats_total=3)
    frame = await watch.next_matched(taxi["id"])
    assert frame["data"]["data"]["seats_available"] == taxi["seats_available"]


async def test_the_owners_own_ride_never_matches(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    origin, destination = place(), place()
    await create_alert(a, owner, origin=origin, destination=destination)
    await make_ride(b, owner, origin=origin, destination=destination)
    assert await watch.matched_until_sentinel(b, driver) == []


async def test_departure_must_be_inside_the_window(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    origin, destination = place(), place()
    route = {"origin": origin, "destination": destination}
    await create_alert(a, owner, **route, departure_from=at(10), departure_to=at(20))
    await make_ride(b, driver, **route, departure_at=at(5))
    await make_ride(b, driver, **route, departure_at=at(25))
    assert await watch.matched_until_sentinel(b, driver) == []
    inside = await make_ride(b, driver, **route, departure_at=at(15))
    assert (await watch.next_matched(inside["id"]))["data"]["data"]["ride_id"] == inside["id"]


async def test_an_open_end_of_the_window_is_unbounded(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    late, early = (
        {"origin": place(), "destination": place()},
        {
            "origin": place(),
            "destination": place(),
        },
    )
    await create_alert(a, owner, **late, departure_from=at(10))
    await create_alert(a, owner, **early, departure_to=at(10))
    await make_ride(b, driver, **late, departure_at=at(5))
    await make_ride(b, driver, **early, departure_at=at(15))
    assert await watch.matched_until_sentinel(b, driver) == []
    far = await make_ride(b, driver, **late, departure_at=at(24 * 365 * 5))
    assert (await watch.next_matched(far["id"]))["data"]["data"]["ride_id"] == far["id"]
    near = await make_ride(b, driver, **early, departure_at=at(0.5))
    assert (await watch.next_matched(near["id"]))["data"]["data"]["ride_id"] == near["id"]


async def test_an_alert_without_a_window_matches_any_future_time(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route)
    for hours in (0.2, 24 * 400):
        ride = await make_ride(b, driver, **route, departure_at=at(hours))
        assert (await watch.next_matched(ride["id"]))["data"]["data"]["ride_id"] == ride["id"]


async def test_price_must_be_at_most_max_price(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, max_price=300)
    await make_ride(b, driver, **route, price=300.01)
    assert await watch.matched_until_sentinel(b, driver) == []
    equal = await make_ride(b, driver, **route, price=300)
    assert (await watch.next_matched(equal["id"]))["data"]["data"]["price"] == 300


async def test_seats_available_must_be_at_least_min_seats(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, min_seats=3)
    await make_ride(b, driver, **route, seats_total=2)
    assert await watch.matched_until_sentinel(b, driver) == []
    equal = await make_ride(b, driver, **route, seats_total=3)
    assert (await watch.next_matched(equal["id"]))["data"]["data"]["seats_available"] == 3


async def test_a_ride_edited_so_that_it_now_matches_notifies_once_whatever_the_edits(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, max_price=300)
    ride = await make_ride(b, driver, **route, price=500)
    url = f"/api/v1/rides/{ride['id']}"
    r = await b.patch(url, json={"price": 250}, headers=driver.headers)
    assert r.status_code == 200, r.text
    frame = await watch.next_matched(ride["id"])
    assert frame["data"]["data"]["price"] == 250
    for price in (500, 200, 900, 100):  # out and in again, on both instances
        http = a if price % 200 else b
        r = await http.patch(url, json={"price": price}, headers=driver.headers)
        assert r.status_code == 200, r.text
    assert await watch.matched_until_sentinel(b, driver) == []
    stored = (await a.get("/api/v1/notifications", headers=owner.headers)).json()["items"]
    assert [n["data"]["ride_id"] for n in stored if n["kind"] == "ride.matched"].count(
        ride["id"]
    ) == 1


async def test_concurrent_edits_on_two_instances_notify_at_most_once(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, max_price=300)
    ride = await make_ride(b, driver, **route, price=500)
    url = f"/api/v1/rides/{ride['id']}"
    answers = await asyncio.gather(
        *(
            http.patch(url, json={"price": price}, headers=driver.headers)
            for http, price in ((a, 100), (b, 200), (a, 150), (b, 250))
        )
    )
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    await watch.next_matched(ride["id"])
    assert await watch.matched_until_sentinel(b, driver) == []


async def test_a_ride_that_gets_seats_back_so_that_it_now_matches_notifies(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, max_price=300, min_seats=2)
    ride = await make_ride(b, driver, **route, price=500, seats_total=3)
    passenger = await signup(a)
    booking = (await book(a, passenger, ride["id"], seats=2)).json()
    confirmed = await b.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert confirmed.status_code == 200, confirmed.text
    edited = await b.patch(
        f"/api/v1/rides/{ride['id']}", json={"price": 200}, headers=driver.headers
    )
    assert edited.status_code == 200, edited.text
    assert await watch.matched_until_sentinel(b, driver) == []  # one seat left: no match yet
    cancelled = await a.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=passenger.headers)
    assert cancelled.status_code == 200, cancelled.text
    frame = await watch.next_matched(ride["id"])
    assert frame["data"]["data"]["seats_available"] == 3


async def test_seats_back_and_edits_at_once_on_two_instances_notify_once(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    await create_alert(a, owner, **route, min_seats=3, max_price=300)
    ride = await make_ride(b, driver, **route, seats_total=3, price=500)
    bookings = []
    for _ in range(2):
        passenger = await signup(a)
        booking = (await book(a, passenger, ride["id"])).json()
        r = await b.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
        assert r.status_code == 200, r.text
        bookings.append((passenger, booking))
    url = f"/api/v1/rides/{ride['id']}"
    r = await a.patch(url, json={"price": 99}, headers=driver.headers)
    assert r.status_code == 200, r.text  # cheap enough now, but one seat left: no match yet
    (p1, b1), (p2, b2) = bookings
    answers = await asyncio.gather(
        a.post(f"/api/v1/bookings/{b1['id']}/cancel", headers=p1.headers),
        b.post(f"/api/v1/bookings/{b2['id']}/cancel", headers=p2.headers),
        b.patch(url, json={"price": 98}, headers=driver.headers),
    )
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    frames = await watch.matched_until_sentinel(b, driver)
    assert [f["data"]["data"]["ride_id"] for f in frames] == [ride["id"]]


async def test_a_deleted_alert_matches_nothing(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    alert = await create_alert(a, owner, **route)
    assert (await b.delete(f"/api/v1/alerts/{alert['id']}", headers=owner.headers)).is_success
    await make_ride(b, driver, **route)
    assert await watch.matched_until_sentinel(b, driver) == []


async def test_never_for_a_ride_published_before_the_alert_existed(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account, watch: Watch
) -> None:
    route = {"origin": place(), "destination": place()}
    older = await make_ride(b, driver, **route, price=500)
    await create_alert(a, owner, **route, max_price=300)
    r = await b.patch(f"/api/v1/rides/{older['id']}", json={"price": 100}, headers=driver.headers)
    assert r.status_code == 200, r.text
    assert await watch.matched_until_sentinel(b, driver) == []


async def test_alerts_check_401_then_422_then_404_then_409(
    a: httpx.AsyncClient, b: httpx.AsyncClient, owner: Account, driver: Account
) -> None:
    body = {"origin": place(), "destination": place()}
    assert_error(await a.post("/api/v1/alerts", json=body), 401, "unauthorized")
    assert_error(await a.get("/api/v1/alerts"), 401, "unauthorized")
    assert_error(await a.delete("/api/v1/alerts/1"), 401, "unauthorized")
    for _ in range(20):
        await create_alert(b, owner, origin=place(), destination=place())
    bad = {"origin": place(), "destination": place(), "min_seats": 0}
    assert_error(await a.post("/api/v1/alerts", json=bad, headers=owner.headers), 422,
                 "validation_error")  # fmt: skip
    assert_error(await a.post("/api/v1/alerts", json=body, headers=owner.headers), 409, "conflict")
    assert_error(await a.delete("/api/v1/alerts/999999999", headers=owner.headers), 404,
                 "not_found")  # fmt: skip
