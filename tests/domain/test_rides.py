from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.config import Settings
from tests.domain.conftest import book, future, make_ride
from tests.helpers import Account, assert_error, signup


async def test_create_ride_returns_the_contract_shape(
    client: httpx.AsyncClient, driver: Account
) -> None:
    ride = await make_ride(
        client, driver, origin_point={"lat": 55.75, "lng": 48.74}, notes="Two bags max"
    )
    assert ride["driver_id"] == driver.id
    assert ride["seats_available"] == 3 and ride["status"] == "scheduled" and ride["version"] == 1
    assert ride["kind"] == "ride" and ride["currency"] == "RUB" and ride["price"] == 250.0
    assert (
        ride["origin_point"] == {"lat": 55.75, "lng": 48.74} and ride["destination_point"] is None
    )
    assert ride["driver"]["display_name"] == "Driver Dina"


async def test_create_ride_validation(client: httpx.AsyncClient, driver: Account) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases = [
        ({"departure_at": past}, "body.departure_at"),
        ({"seats_total": 0}, "body.seats_total"),
        ({"seats_total": 9}, "body.seats_total"),
        ({"price": -1}, "body.price"),
        ({"kind": "bus"}, "body.kind"),
        ({"origin": ""}, "body.origin"),
        ({"origin_point": {"lat": 91, "lng": 0}}, "body.origin_point.lat"),
        ({"departure_at": "2030-01-01T10:00:00"}, "body.departure_at"),  # no offset
    ]
    for change, field in cases:
        body = {"origin": "A", "destination": "B", "departure_at": future(), "seats_total": 2}
        body.update(change)
        r = await client.post("/api/v1/rides", json=body, headers=driver.headers)
        error = assert_error(r, 422, "validation_error")
        assert field in [d["field"] for d in error["details"]], (change, error)


async def test_get_ride_has_etag_and_404(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver)
    r = await client.get(f"/api/v1/rides/{ride['id']}", headers=passenger.headers)
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    assert r.json()["id"] == ride["id"]
    assert_error(
        await client.get("/api/v1/rides/999999", headers=passenger.headers), 404, "not_found"
    )
    assert_error(await client.get(f"/api/v1/rides/{ride['id']}"), 401, "unauthorized")


async def test_patch_with_if_match_and_ownership(
    client: httpx.AsyncClient, driver: Account, stranger: Account
) -> None:
    ride = await make_ride(client, driver)
    url = f"/api/v1/rides/{ride['id']}"
    r = await client.patch(
        url,
        json={"notes": "Leaving from the main gate"},
        headers={**driver.headers, "If-Match": 'W/"1"'},
    )
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    stale = await client.patch(
        url, json={"notes": "x"}, headers={**driver.headers, "If-Match": '"1"'}
    )
    assert_error(stale, 412, "precondition_failed")
    ok = await client.patch(url, json={"price": 300}, headers={**driver.headers, "If-Match": "2"})
    assert ok.json()["price"] == 300.0 and ok.json()["version"] == 3
    free = await client.patch(url, json={"seats_total": 4}, headers=driver.headers)  # unconditional
    assert free.json()["seats_available"] == 4 and free.json()["version"] == 4
    assert_error(
        await client.patch(url, json={"notes": "mine"}, headers=stranger.headers), 403, "forbidden"
    )
    # order: 404 before 403 before 412
    assert_error(
        await client.patch("/api/v1/rides/999999", json={}, headers=stranger.headers),
        404,
        "not_found",
    )
    assert_error(
        await client.patch(
            url, json={"notes": "x"}, headers={**stranger.headers, "If-Match": '"1"'}
        ),
        403,
        "forbidden",
    )
    assert_error(
        await client.patch(url, json={"seats_total": 0}, headers=driver.headers),
        422,
        "validation_error",
    )
    assert_error(
        await client.patch(url, json={"origin": None}, headers=driver.headers),
        422,
        "validation_error",
    )


async def test_seats_total_cannot_drop_below_booked(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, instant_booking=True)
    assert (await book(client, passenger, ride["id"], seats=2)).status_code == 201
    url = f"/api/v1/rides/{ride['id']}"
    assert_error(
        await client.patch(url, json={"seats_total": 1}, headers=driver.headers), 409, "conflict"
    )
    r = await client.patch(url, json={"seats_total": 5}, headers=driver.headers)
    assert r.json()["seats_available"] == 3


async def test_state_machine(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver)
    base = f"/api/v1/rides/{ride['id']}"
    assert_error(await client.post(base + "/complete", headers=driver.headers), 409, "conflict")
    assert_error(await client.post(base + "/start", headers=passenger.headers), 403, "forbidden")
    started = await client.post(base + "/start", headers=driver.headers)
    assert started.status_code == 200 and started.json()["status"] == "started"
    assert_error(await client.post(base + "/cancel", headers=driver.headers), 409, "conflict")
    assert_error(await client.post(base + "/start", headers=driver.headers), 409, "conflict")
    done = await client.post(base + "/complete", headers=driver.headers)
    assert done.json()["status"] == "completed"
    assert_error(
        await client.patch(base, json={"notes": "x"}, headers=driver.headers), 409, "conflict"
    )
    other = await make_ride(client, driver)
    cancelled = await client.post(f"/api/v1/rides/{other['id']}/cancel", headers=driver.headers)
    assert cancelled.json()["status"] == "cancelled"
    assert_error(
        await client.post(f"/api/v1/rides/{other['id']}/start", headers=driver.headers),
        409,
        "conflict",
    )


async def test_taxi_share_is_instant_and_organiser_takes_no_seat(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    group = await make_ride(client, driver, kind="taxi_share", seats_total=3, instant_booking=False)
    assert group["instant_booking"] is True and group["seats_available"] == 3
    r = await book(client, passenger, group["id"])
    assert r.status_code == 201 and r.json()["status"] == "confirmed"
    assert_error(await book(client, driver, group["id"]), 409, "conflict")


async def test_require_verified_drivers_and_admin_verification(
    settings_factory: Callable[..., Settings], db_conn: Any
) -> None:
    app = create_app(settings_factory(require_verified_drivers=True))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
            admin = await signup(client)
            await db_conn.execute("UPDATE users SET is_admin = true WHERE id = $1", admin.id)
            driver = await signup(client)
            body = {"origin": "A", "destination": "B", "departure_at": future(), "seats_total": 2}
            r = await client.post("/api/v1/rides", json=body, headers=driver.headers)
            assert_error(r, 403, "forbidden")
            group = {**body, "kind": "taxi_share"}  # organisers need no verification
            assert (
                await client.post("/api/v1/rides", json=group, headers=driver.headers)
            ).status_code == 201
            verify = f"/api/v1/admin/users/{driver.id}/verify"
            assert_error(await client.post(verify, headers=driver.headers), 403, "forbidden")
            v = await client.post(verify, headers=admin.headers)
            assert v.status_code == 200 and v.json()["is_verified"] is True
            assert (
                await client.post("/api/v1/rides", json=body, headers=driver.headers)
            ).status_code == 201
            assert_error(
                await client.post("/api/v1/admin/users/999999/verify", headers=admin.headers),
                404,
                "not_found",
            )
