"""PROTOCOL.md section 1 (REST) as a client author reads it, against a real `kuda serve`: the
check order, actions, ETag and If-Match, the empty search's suggestions, the action events of
section 3 as another instance's subscribers see them, and the operations endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Deployment, events_until
from tests.domain.conftest import book, make_ride
from tests.helpers import assert_error, signup

pytestmark = pytest.mark.slow

PUBLIC_PROFILE = {"id", "display_name", "bio", "is_verified", "rating_avg", "rating_count"}


async def test_checks_run_401_422_404_403_412_409(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, stranger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    url, missing = f"/api/v1/rides/{ride['id']}", "/api/v1/rides/999999999"
    assert_error(await a.patch(url, json={"seats_total": 0}), 401, "unauthorized")
    assert_error(
        await a.patch(missing, json={"seats_total": 0}, headers=stranger.headers),
        422,
        "validation_error",
    )
    assert_error(await a.patch(missing, json={"notes": "x"}, headers=stranger.headers), 404,
                 "not_found")  # fmt: skip
    stale = {**stranger.headers, "If-Match": '"999"'}
    assert_error(await b.patch(url, json={"notes": "x"}, headers=stale), 403, "forbidden")
    cancelled = await b.post(f"{url}/cancel", headers=driver.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stale = {**driver.headers, "If-Match": '"1"'}
    assert_error(await a.patch(url, json={"notes": "x"}, headers=stale), 412,
                 "precondition_failed")  # fmt: skip
    assert_error(await a.post(f"{url}/start", headers=driver.headers), 409, "conflict")


async def test_etag_and_every_if_match_form(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver)
    url = f"/api/v1/rides/{ride['id']}"
    shown = await b.get(url, headers=driver.headers)
    assert shown.headers["ETag"] == f'"{ride["version"]}"'
    version = ride["version"]
    for form in ("{v}", '"{v}"', 'W/"{v}"'):
        headers = {**driver.headers, "If-Match": form.format(v=version)}
        r = await (a if version % 2 else b).patch(url, json={"notes": form}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version + 1
        version += 1
    assert (await a.get(url, headers=driver.headers)).headers["ETag"] == f'"{version}"'
    unconditional = await b.patch(url, json={"notes": "no If-Match"}, headers=driver.headers)
    assert unconditional.status_code == 200 and unconditional.json()["version"] == version + 1


async def test_a_new_ride_and_its_refusals(a: httpx.AsyncClient) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver)
    shown = (ride["driver_id"], ride["status"], ride["seats_available"])
    assert shown == (driver.id, "scheduled", 3)
    assert isinstance(ride["id"], int) and isinstance(ride["version"], int)
    base = {"origin": "A", "destination": "B", "departure_at": "2099-01-01T10:00:00Z"}
    for bad in ({"departure_at": "2001-01-01T10:00:00Z", "seats_total": 2},
                {"seats_total": 0}, {"seats_total": 9}):  # fmt: skip
        r = await a.post("/api/v1/rides", json={**base, "seats_total": 1, **bad},
                         headers=driver.headers)  # fmt: skip
        error = assert_error(r, 422, "validation_error")
        assert error.get("details"), error


async def test_an_empty_search_carries_suggestions(a: httpx.AsyncClient) -> None:
    user = await signup(a)
    r = await a.get("/api/v1/rides", params={"origin": "Nowhere-at-all"}, headers=user.headers)
    body = r.json()
    assert body["items"] == [] and body["next_cursor"] is None
    assert set(body["suggestions"]) == {"taxi_services", "taxi_groups"}


async def test_the_public_profile_shows_nothing_private(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    user = await signup(a, phone="+79990002233")
    viewer = await signup(b)
    profile = (await b.get(f"/api/v1/users/{user.id}", headers=viewer.headers)).json()
    assert set(profile) == PUBLIC_PROFILE


async def subscribed(ws: Any, channel: str) -> None:
    ack = await ws.request({"op": "subscribe", "channel": channel})
    assert ack["type"] == "subscribed", ack


async def test_a_confirmed_booking_emits_what_section_3_lists_on_the_other_instance(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    async with (
        kuda.socket(kuda.b, passenger.access_token) as mine,
        kuda.socket(kuda.b, driver.access_token) as ride_ws,
        kuda.socket(kuda.b, driver.access_token) as live,
    ):
        await subscribed(mine, f"user:{passenger.id}")
        await subscribed(ride_ws, f"ride:{ride['id']}")
        await subscribed(live, "rides")
        booking = (await book(a, passenger, ride["id"], seats=2)).json()
        assert booking["status"] == "pending"
        r = await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
        assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
        on_ride = (await events_until(ride_ws, "booking.confirmed"))[-1]
        assert on_ride["data"] == {"booking_id": booking["id"], "ride_id": ride["id"],
                                   "seats": 2, "seats_available": 1}  # fmt: skip
        frames = await events_until(mine, "booking.confirmed")
        assert [f["event"] for f in frames].count("booking.requested") == 1
        assert frames[-1]["data"]["id"] == booking["id"]
        note = (
            await events_until(
                mine,
                lambda f: (
                    f["event"] == "notification.created"
                    and f["data"]["kind"] == "booking.confirmed"
                ),
            )
        )[-1]["data"]
        assert set(note) == {"id", "kind", "data", "created_at", "read_at"}
        updated = await events_until(
            live, lambda f: f["event"] == "ride.updated" and f["data"]["id"] == ride["id"]
        )
        assert updated[-1]["data"]["seats_available"] == 1 and "seq" not in updated[-1]


async def test_reviews_open_after_completion_once_per_pair(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver, departure_at=_in_hours(1))
    booking = (await book(b, passenger, ride["id"])).json()
    await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    review = {"target_id": driver.id, "stars": 4}
    url = f"/api/v1/rides/{ride['id']}/reviews"
    assert_error(await b.post(url, json=review, headers=passenger.headers), 409, "conflict")
    for action in ("start", "complete"):
        r = await a.post(f"/api/v1/rides/{ride['id']}/{action}", headers=driver.headers)
        assert r.status_code == 200 and r.json()["status"] in ("started", "completed"), r.text
    assert (await b.post(url, json=review, headers=passenger.headers)).status_code == 201
    assert_error(await a.post(url, json=review, headers=passenger.headers), 409, "conflict")
    listed = (await a.get(f"/api/v1/users/{driver.id}/reviews", headers=driver.headers)).json()
    assert [r["stars"] for r in listed["items"]] == [4]


async def test_operations_endpoints(kuda: Deployment) -> None:
    for server in kuda.instances:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            text = ready.text
            assert "database" in text and "broker" in text, text
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and "# TYPE" in metrics.text
            assert (await http.get("/openapi.json")).json()["openapi"]
            assert (await http.get("/docs")).status_code == 200


def _in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()
