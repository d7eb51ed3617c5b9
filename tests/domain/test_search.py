from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.config import Settings
from tests.domain.conftest import future, make_ride
from tests.helpers import Account, assert_error, signup

INNOPOLIS = {"lat": 55.7523, "lng": 48.7448}
KAZAN = {"lat": 55.7963, "lng": 49.1088}
AIRPORT = {"lat": 55.6062, "lng": 49.2787}


async def _search(client: httpx.AsyncClient, who: Account, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/v1/rides", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_filters(client: httpx.AsyncClient, driver: Account, passenger: Account) -> None:
    a = await make_ride(
        client, driver, origin="Innopolis", destination="Kazan Airport", price=400, seats_total=1
    )
    b = await make_ride(
        client, driver, origin="Kazan", destination="Innopolis", price=200, seats_total=4
    )
    c = await make_ride(
        client, driver, origin="Innopolis", destination="Kazan", price=None, kind="taxi_share"
    )
    ids = lambda body: {r["id"] for r in body["items"]}  # noqa: E731
    assert ids(await _search(client, passenger, origin="inno")) == {a["id"], c["id"]}
    assert ids(await _search(client, passenger, destination="KAZAN")) == {a["id"], c["id"]}
    assert ids(await _search(client, passenger, max_price=300)) == {b["id"]}
    assert ids(await _search(client, passenger, min_seats=2)) == {b["id"], c["id"]}
    assert ids(await _search(client, passenger, kind="taxi_share")) == {c["id"]}
    assert ids(await _search(client, passenger, origin="%")) == set()  # LIKE wildcards are literal
    window = await _search(client, passenger, departure_from=future(1), departure_to=future(48))
    assert ids(window) == {a["id"], b["id"], c["id"]}
    assert ids(await _search(client, passenger, departure_from=future(30))) == set()


async def test_default_is_future_scheduled_including_own(
    client: httpx.AsyncClient, driver: Account, db_conn: Any
) -> None:
    live = await make_ride(client, driver)
    gone = await make_ride(client, driver)
    await db_conn.execute(
        "UPDATE rides SET departure_at = now() - interval '1 hour' WHERE id = $1", gone["id"]
    )
    cancelled = await make_ride(client, driver)
    await client.post(f"/api/v1/rides/{cancelled['id']}/cancel", headers=driver.headers)
    body = await _search(client, driver)
    assert [r["id"] for r in body["items"]] == [live["id"]]
    assert [r["id"] for r in (await _search(client, driver, status="cancelled"))["items"]] == [
        cancelled["id"]
    ]


async def test_sorts_and_keyset_pagination_stable_under_inserts(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    created = [
        await make_ride(client, driver, departure_at=future(10 + i), price=100 + (i * 37) % 300)
        for i in range(7)
    ]
    first = await _search(client, passenger, limit=3)
    assert [r["id"] for r in first["items"]] == [r["id"] for r in created[:3]]
    # A ride inserted before the cursor position does not shift the next page.
    await make_ride(client, driver, departure_at=future(5))
    second = await _search(client, passenger, limit=3, cursor=first["next_cursor"])
    assert [r["id"] for r in second["items"]] == [r["id"] for r in created[3:6]]
    by_price: list[float] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"sort": "price", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await _search(client, passenger, **params)
        by_price += [r["price"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert by_price == sorted(by_price) and len(by_price) == 8
    mismatch = await client.get(
        "/api/v1/rides",
        params={"sort": "driver_rating", "cursor": first["next_cursor"]},
        headers=passenger.headers,
    )
    assert_error(mismatch, 422, "validation_error")
    garbage = await client.get("/api/v1/rides", params={"cursor": "!!!"}, headers=passenger.headers)
    assert_error(garbage, 422, "validation_error")
    assert_error(
        await client.get("/api/v1/rides", params={"limit": 101}, headers=passenger.headers),
        422,
        "validation_error",
    )


async def test_driver_rating_sort_and_filter(client: httpx.AsyncClient, db_conn: Any) -> None:
    good, fair, new = await signup(client), await signup(client), await signup(client)
    await db_conn.execute(
        "UPDATE users SET rating_sum = 9, rating_count = 2 WHERE id = $1", good.id
    )
    await db_conn.execute(
        "UPDATE users SET rating_sum = 3, rating_count = 1 WHERE id = $1", fair.id
    )
    rides = {who.id: await make_ride(client, who) for who in (fair, new, good)}
    body = await _search(client, new, sort="driver_rating")
    assert [r["driver_id"] for r in body["items"]] == [good.id, fair.id, new.id]
    assert body["items"][0]["driver"]["rating_avg"] == 4.5
    page = await _search(client, new, sort="driver_rating", limit=1)
    nxt = await _search(client, new, sort="driver_rating", limit=1, cursor=page["next_cursor"])
    assert nxt["items"][0]["id"] == rides[fair.id]["id"]
    rated = await _search(client, new, min_driver_rating=4)
    assert [r["driver_id"] for r in rated["items"]] == [good.id]


async def test_near_a_point(client: httpx.AsyncClient, driver: Account, passenger: Account) -> None:
    inno = await make_ride(client, driver, origin_point=INNOPOLIS, destination_point=AIRPORT)
    kzn = await make_ride(
        client, driver, origin="Kazan", origin_point=KAZAN, destination_point=AIRPORT
    )
    await make_ride(client, driver)  # no coordinates
    near_inno = await _search(client, passenger, origin_near="55.75,48.75", origin_radius_km=3)
    assert [r["id"] for r in near_inno["items"]] == [inno["id"]]
    to_airport = await _search(
        client,
        passenger,
        destination_near=f"{AIRPORT['lat']},{AIRPORT['lng']}",
        destination_radius_km=1,
    )
    assert {r["id"] for r in to_airport["items"]} == {inno["id"], kzn["id"]}
    wide = await _search(client, passenger, origin_near="55.77,48.9", origin_radius_km=30)
    assert {r["id"] for r in wide["items"]} == {inno["id"], kzn["id"]}
    bad = await client.get(
        "/api/v1/rides", params={"origin_near": "north"}, headers=passenger.headers
    )
    assert_error(bad, 422, "validation_error")


async def test_empty_result_suggests_taxis_and_groups(
    settings_factory: Callable[..., Settings],
) -> None:
    taxis = [{"name": "Taxi Innopolis", "phone": "+78435000000", "url": "https://taxi.example"}]
    app = create_app(settings_factory(taxi_services=taxis))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k") as client:
            organiser, rider = await signup(client), await signup(client)
            soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
            group = await make_ride(
                client,
                organiser,
                origin="Innopolis",
                destination="Kazan Airport",
                kind="taxi_share",
                departure_at=soon,
            )
            await make_ride(
                client,
                organiser,
                origin="Innopolis",
                destination="Kazan Airport",
                kind="taxi_share",
                departure_at=future(30),
            )
            params = {"origin": "innopolis", "destination": "kazan airport", "kind": "ride"}
            body = await _search(client, rider, **params)
            assert body["items"] == []
            assert body["suggestions"]["taxi_services"] == taxis
            assert [g["id"] for g in body["suggestions"]["taxi_groups"]] == [group["id"]]
            found = await _search(client, rider, origin="innopolis")
            assert "suggestions" not in found
