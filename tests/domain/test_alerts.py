"""Ride alerts (PROTOCOL.md section 6): the `/api/v1/alerts` surface, every bad input, the
matching rules one by one, and the `ride.matched` notification, stored once per (alert, ride)
and pushed on `user:{id}`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from server.app import create_app
from server.config import Settings
from tests.domain.conftest import book, future, make_ride
from tests.helpers import Account, assert_error, signup
from tests.live import LiveServer, ws_connect

ALERT_KEYS = {
    "id",
    "origin",
    "destination",
    "departure_from",
    "departure_to",
    "max_price",
    "min_seats",
    "created_at",
}
DATA_KEYS = {
    "alert_id",
    "ride_id",
    "origin",
    "destination",
    "departure_at",
    "price",
    "seats_available",
}


async def alert(client: httpx.AsyncClient, who: Account, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"origin": "Innopolis", "destination": "Kazan"}
    body.update(fields)
    r = await client.post("/api/v1/alerts", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    assert set(created) == ALERT_KEYS
    return created


async def matched(client: httpx.AsyncClient, who: Account) -> list[dict[str, Any]]:
    """The `ride.matched` notifications' data, oldest first."""
    r = await client.get("/api/v1/notifications", params={"limit": 100}, headers=who.headers)
    assert r.status_code == 200, r.text
    items = [n["data"] for n in r.json()["items"] if n["kind"] == "ride.matched"]
    for data in items:
        assert set(data) == DATA_KEYS, data
    return list(reversed(items))


async def pairs(client: httpx.AsyncClient, who: Account) -> list[tuple[int, int]]:
    return [(d["alert_id"], d["ride_id"]) for d in await matched(client, who)]


async def patch(
    client: httpx.AsyncClient, driver: Account, ride_id: int, **fields: Any
) -> dict[str, Any]:
    r = await client.patch(f"/api/v1/rides/{ride_id}", json=fields, headers=driver.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# REST surface ------------------------------------------------------------------------------


async def test_create_list_and_delete(client: httpx.AsyncClient, passenger: Account) -> None:
    start, end = datetime(2099, 1, 1, 8, tzinfo=UTC), datetime(2099, 1, 1, 20, tzinfo=UTC)
    full = await alert(
        client,
        passenger,
        origin="  Innopolis ",
        destination="Kazan Airport",
        departure_from="2099-01-01T11:00:00+03:00",
        departure_to=end.isoformat(),
        max_price=300.5,
        min_seats=2,
    )
    created_at = datetime.fromisoformat(full["created_at"].replace("Z", "+00:00"))
    assert abs(created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert {k: v for k, v in full.items() if k not in ("id", "created_at")} == {
        "origin": "Innopolis",
        "destination": "Kazan Airport",
        "departure_from": start.isoformat().replace("+00:00", "Z"),
        "departure_to": end.isoformat().replace("+00:00", "Z"),
        "max_price": 300.5,
        "min_seats": 2,
    }
    bare = await alert(client, passenger, origin="kazan", destination="innopolis")
    assert [bare[k] for k in ("departure_from", "departure_to", "max_price", "min_seats")] == [
        None
    ] * 4

    r = await client.get("/api/v1/alerts", headers=passenger.headers)
    assert r.status_code == 200
    assert r.json() == {"items": [bare, full], "next_cursor": None}  # newest first

    gone = await client.delete(f"/api/v1/alerts/{full['id']}", headers=passenger.headers)
    assert gone.status_code == 204 and gone.content == b""
    listed = (await client.get("/api/v1/alerts", headers=passenger.headers)).json()
    assert listed["items"] == [bare]
    again = await client.delete(f"/api/v1/alerts/{full['id']}", headers=passenger.headers)
    assert_error(again, 404, "not_found")


async def test_paging(client: httpx.AsyncClient, passenger: Account) -> None:
    ids = [(await alert(client, passenger, origin=f"Stop {i}"))["id"] for i in range(5)]
    pages, params = [], {"limit": 2}
    while True:
        r = await client.get("/api/v1/alerts", params=params, headers=passenger.headers)
        assert r.status_code == 200
        page = r.json()
        assert set(page) == {"items", "next_cursor"}
        pages.append([a["id"] for a in page["items"]])
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[0:1]]


async def test_others_alerts_are_invisible_and_not_deletable(
    client: httpx.AsyncClient, passenger: Account, stranger: Account
) -> None:
    mine = await alert(client, passenger)
    assert (await client.get("/api/v1/alerts", headers=stranger.headers)).json() == {
        "items": [],
        "next_cursor": None,
    }
    r = await client.delete(f"/api/v1/alerts/{mine['id']}", headers=stranger.headers)
    assert_error(r, 404, "not_found")
    assert_error(
        await client.delete("/api/v1/alerts/999999", headers=stranger.headers), 404, "not_found"
    )
    listed = (await client.get("/api/v1/alerts", headers=passenger.headers)).json()
    assert listed["items"] == [mine]


async def test_without_a_token(client: httpx.AsyncClient, passenger: Account) -> None:
    mine = await alert(client, passenger)
    body = {"origin": "Innopolis", "destination": "Kazan"}
    assert_error(await client.post("/api/v1/alerts", json=body), 401, "unauthorized")
    assert_error(await client.post("/api/v1/alerts", json={}), 401, "unauthorized")  # 401 first
    assert_error(await client.get("/api/v1/alerts"), 401, "unauthorized")
    assert_error(await client.delete(f"/api/v1/alerts/{mine['id']}"), 401, "unauthorized")
    bad = {"Authorization": "Bearer not-a-token"}
    assert_error(await client.get("/api/v1/alerts", headers=bad), 401, "unauthorized")


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"destination": "Kazan"}, "body.origin"),
    ({"origin": "Innopolis"}, "body.destination"),
    ({"origin": "   ", "destination": "Kazan"}, "body.origin"),
    ({"origin": "Innopolis", "destination": ""}, "body.destination"),
    ({"origin": "x" * 201, "destination": "Kazan"}, "body.origin"),
    ({"origin": "Innopolis", "destination": "y" * 201}, "body.destination"),
    ({"origin": "Inno\u0000polis", "destination": "Kazan"}, "body.origin"),
    ({"origin": 42, "destination": "Kazan"}, "body.origin"),
    ({"origin": "Innopolis", "destination": "Kazan", "max_price": -1}, "body.max_price"),
    ({"origin": "Innopolis", "destination": "Kazan", "max_price": "cheap"}, "body.max_price"),
    ({"origin": "Innopolis", "destination": "Kazan", "max_price": 10**10}, "body.max_price"),
    ({"origin": "Innopolis", "destination": "Kazan", "max_price": 1.234}, "body.max_price"),
    ({"origin": "Innopolis", "destination": "Kazan", "min_seats": 0}, "body.min_seats"),
    ({"origin": "Innopolis", "destination": "Kazan", "min_seats": 9}, "body.min_seats"),
    ({"origin": "Innopolis", "destination": "Kazan", "min_seats": 1.5}, "body.min_seats"),
    (
        {
            "origin": "I",
            "destination": "K",
            "departure_from": "2099-01-02T00:00:00Z",
            "departure_to": "2099-01-01T00:00:00Z",
        },
        "body.departure_to",
    ),
    (
        {"origin": "I", "destination": "K", "departure_from": "2099-01-01T00:00:00"},
        "body.departure_from",
    ),
    (
        {"origin": "I", "destination": "K", "departure_to": "9999-12-31T23:59:59Z"},
        "body.departure_to",
    ),
    (
        {"origin": "I", "destination": "K", "departure_from": "1969-12-31T00:00:00Z"},
        "body.departure_from",
    ),
    ({"origin": "I", "destination": "K", "departure_to": "tomorrow"}, "body.departure_to"),
    ({"origin": "I", "destination": "K", "radius_km": 3}, "body.radius_km"),
]


async def test_bad_bodies_are_422_with_the_field(
    client: httpx.AsyncClient, passenger: Account
) -> None:
    for body, field in BAD_BODIES:
        r = await client.post("/api/v1/alerts", json=body, headers=passenger.headers)
        error = assert_error(r, 422, "validation_error")
        assert field in [d["field"] for d in error["details"]], (body, error)
    for raw in (b"not json", b"[]", b"null"):
        r = await client.post(
            "/api/v1/alerts",
            content=raw,
            headers={**passenger.headers, "Content-Type": "application/json"},
        )
        assert_error(r, 422, "validation_error")
    assert (await client.get("/api/v1/alerts", headers=passenger.headers)).json()["items"] == []


async def test_bad_list_and_delete_parameters_are_422(
    client: httpx.AsyncClient, passenger: Account
) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "not-a-cursor"}):
        r = await client.get("/api/v1/alerts", params=params, headers=passenger.headers)
        assert_error(r, 422, "validation_error")
    for bad in ("0", "-1", "abc", str(2**63)):
        r = await client.delete(f"/api/v1/alerts/{bad}", headers=passenger.headers)
        assert_error(r, 422, "validation_error")


async def test_at_most_twenty_per_user(
    client: httpx.AsyncClient, passenger: Account, stranger: Account
) -> None:
    first = await alert(client, passenger, origin="Stop 0")
    for i in range(1, 20):
        await alert(client, passenger, origin=f"Stop {i}")
    r = await client.post(
        "/api/v1/alerts", json={"origin": "A", "destination": "B"}, headers=passenger.headers
    )
    assert_error(r, 409, "conflict")
    await alert(client, stranger)  # a limit per user
    assert (
        await client.delete(f"/api/v1/alerts/{first['id']}", headers=passenger.headers)
    ).status_code == 204
    await alert(client, passenger, origin="Stop 20")
    page = await client.get("/api/v1/alerts", params={"limit": 100}, headers=passenger.headers)
    assert len(page.json()["items"]) == 20


async def test_concurrent_creations_never_make_twenty_one(
    client: httpx.AsyncClient, passenger: Account
) -> None:
    for i in range(17):
        await alert(client, passenger, origin=f"Stop {i}")
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/v1/alerts",
                json={"origin": f"Race {i}", "destination": "Kazan"},
                headers=passenger.headers,
            )
            for i in range(8)
        )
    )
    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 5
    page = await client.get("/api/v1/alerts", params={"limit": 100}, headers=passenger.headers)
    assert len(page.json()["items"]) == 20


async def test_idempotency_key(client: httpx.AsyncClient, passenger: Account) -> None:
    headers = {**passenger.headers, "Idempotency-Key": "alert-1"}
    body = {"origin": "Innopolis", "destination": "Kazan", "min_seats": 2}
    first = await client.post("/api/v1/alerts", json=body, headers=headers)
    again = await client.post("/api/v1/alerts", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = await client.post("/api/v1/alerts", json={**body, "min_seats": 3}, headers=headers)
    assert_error(other, 422, "validation_error")
    listed = (await client.get("/api/v1/alerts", headers=passenger.headers)).json()["items"]
    assert listed == [first.json()]


async def test_creating_draws_on_the_write_budget(
    settings_factory: Callable[..., Settings],
) -> None:
    app = create_app(settings_factory(write_rate_per_user=2))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kuda.test") as c:
            who = await signup(c)
            await alert(c, who)
            await make_ride(c, who)
            r = await c.post(
                "/api/v1/alerts", json={"origin": "A", "destination": "B"}, headers=who.headers
            )
            error = assert_error(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) == error["details"]["retry_after_s"] > 0
            bad = await c.post("/api/v1/alerts", json={"origin": ""}, headers=who.headers)
            assert_error(bad, 429, "rate_limited")  # the budget is checked before the body
            assert (await c.get("/api/v1/alerts", headers=who.headers)).status_code == 200


# Matching rules ----------------------------------------------------------------------------


async def test_a_published_ride_notifies_each_matching_alert_once(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    mine = await alert(client, passenger, origin="innopolis", destination="KAZAN")
    theirs = await alert(client, stranger, origin="Inno", destination="zan")
    ride = await make_ride(
        client,
        driver,
        origin="Innopolis, Universitetskaya 1",
        destination="Kazan Airport",
        price=250,
        seats_total=3,
    )
    expected = {
        "ride_id": ride["id"],
        "origin": "Innopolis, Universitetskaya 1",
        "destination": "Kazan Airport",
        "departure_at": ride["departure_at"],
        "price": 250.0,
        "seats_available": 3,
    }
    assert await matched(client, passenger) == [{"alert_id": mine["id"], **expected}]
    assert await matched(client, stranger) == [{"alert_id": theirs["id"], **expected}]
    assert await matched(client, driver) == []


async def test_text_rules(client: httpx.AsyncClient, driver: Account, passenger: Account) -> None:
    """Case-insensitive substring of the ride's text, both ends; literal (no wildcards)."""
    hits = [
        await alert(client, passenger, origin="INNOPOLIS", destination="kazan"),
        await alert(client, passenger, origin="nopol", destination="aza"),
        await alert(client, passenger, origin="Innopolis", destination="Kazan"),
    ]
    for origin, destination in (
        ("Innopolis Centre", "Kazan"),  # the alert's text is longer than the ride's
        ("Kazan", "Innopolis"),  # the other direction
        ("Innopolis", "Moscow"),
        ("Verkhniy Uslon", "Kazan"),
        ("%", "%"),
        ("Inno_olis", "Kazan"),
    ):
        await alert(client, passenger, origin=origin, destination=destination)
    ride = await make_ride(client, driver, origin="Innopolis", destination="Kazan")
    assert await pairs(client, passenger) == [(a["id"], ride["id"]) for a in hits]


async def test_window_rules(client: httpx.AsyncClient, driver: Account, passenger: Account) -> None:
    departure = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    iso = lambda d: d.isoformat()  # noqa: E731
    hour = timedelta(hours=1)
    hits = [
        await alert(client, passenger),  # no window: any future time
        await alert(client, passenger, departure_from=iso(departure - hour)),
        await alert(client, passenger, departure_to=iso(departure + hour)),
        await alert(
            client,
            passenger,
            departure_from=iso(departure - hour),
            departure_to=iso(departure + hour),
        ),
        await alert(client, passenger, departure_from=iso(departure), departure_to=iso(departure)),
    ]
    await alert(client, passenger, departure_from=iso(departure + timedelta(seconds=1)))
    await alert(client, passenger, departure_to=iso(departure - timedelta(seconds=1)))
    await alert(
        client,
        passenger,
        departure_from=iso(departure - 3 * hour),
        departure_to=iso(departure - 2 * hour),
    )
    ride = await make_ride(client, driver, departure_at=iso(departure))
    assert await pairs(client, passenger) == [(a["id"], ride["id"]) for a in hits]


async def test_price_and_seats_rules(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    hits = [
        await alert(client, passenger, max_price=250),
        await alert(client, passenger, max_price=1000, min_seats=3),
        await alert(client, passenger, min_seats=1),
    ]
    await alert(client, passenger, max_price=249.99)
    await alert(client, passenger, min_seats=4)
    await alert(client, passenger, max_price=0)
    ride = await make_ride(client, driver, price=250, seats_total=3)
    assert await pairs(client, passenger) == [(a["id"], ride["id"]) for a in hits]
    # A ride without a price matches no alert with a maximum, as search does.
    free = await make_ride(client, driver, price=None, seats_total=3)
    assert [p for p in await pairs(client, passenger) if p[1] == free["id"]] == [
        (hits[2]["id"], free["id"])
    ]


async def test_never_the_drivers_own_alert(client: httpx.AsyncClient, driver: Account) -> None:
    await alert(client, driver)
    await make_ride(client, driver)
    assert await matched(client, driver) == []


async def test_never_for_a_ride_published_before_the_alert(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, price=500)
    await alert(client, passenger, max_price=300)
    await patch(client, driver, ride["id"], price=200)
    await patch(client, driver, ride["id"], notes="still here")
    assert await matched(client, passenger) == []
    later = await make_ride(client, driver)
    assert [r for _, r in await pairs(client, passenger)] == [later["id"]]


async def test_an_edit_into_a_match_notifies_once(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    cheap = await alert(client, passenger, destination="Airport", max_price=300)
    ride = await make_ride(client, driver, destination="Kazan", price=500)
    assert await matched(client, passenger) == []
    await patch(client, driver, ride["id"], price=250)  # still the wrong destination
    assert await matched(client, passenger) == []
    edited = await patch(client, driver, ride["id"], destination="Kazan Airport")
    assert await matched(client, passenger) == [
        {
            "alert_id": cheap["id"],
            "ride_id": ride["id"],
            "origin": "Innopolis",
            "destination": "Kazan Airport",
            "departure_at": edited["departure_at"],
            "price": 250.0,
            "seats_available": 3,
        }
    ]
    # Further edits, out of the match and back into it, never notify the pair again.
    await patch(client, driver, ride["id"], price=200)
    await patch(client, driver, ride["id"], price=900)
    await patch(client, driver, ride["id"], price=100, notes="cheaper")
    assert len(await matched(client, passenger)) == 1


async def test_seats_back_into_a_match(
    client: httpx.AsyncClient, driver: Account, passenger: Account, stranger: Account
) -> None:
    wanted = await alert(client, stranger, max_price=300, min_seats=2)
    ride = await make_ride(client, driver, price=500, seats_total=3, instant_booking=True)
    booking = (await book(client, passenger, ride["id"], seats=2)).json()
    assert booking["status"] == "confirmed"
    await patch(client, driver, ride["id"], price=250)  # cheap enough, but 1 seat left
    assert await matched(client, stranger) == []
    r = await client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=passenger.headers)
    assert r.status_code == 200
    (data,) = await matched(client, stranger)
    assert (data["alert_id"], data["seats_available"], data["price"]) == (wanted["id"], 3, 250.0)
    # Booking and cancelling again gives the seats back again: no second notification.
    again = (await book(client, passenger, ride["id"], seats=2)).json()
    r = await client.post(f"/api/v1/bookings/{again['id']}/cancel", headers=driver.headers)
    assert r.status_code == 200
    assert len(await matched(client, stranger)) == 1


async def test_no_match_for_a_cancelled_ride_or_a_deleted_alert(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    gone = await alert(client, passenger, max_price=300)
    stays = await alert(client, passenger, max_price=300, destination="Airport")
    ride = await make_ride(client, driver, price=500)
    r = await client.delete(f"/api/v1/alerts/{gone['id']}", headers=passenger.headers)
    assert r.status_code == 204
    await patch(client, driver, ride["id"], price=200)
    assert await matched(client, passenger) == []
    other = await make_ride(client, driver, price=500, destination="Kazan")
    cancelled = await client.post(f"/api/v1/rides/{other['id']}/cancel", headers=driver.headers)
    assert cancelled.status_code == 200
    r = await client.patch(
        f"/api/v1/rides/{other['id']}", json={"price": 100}, headers=driver.headers
    )
    assert_error(r, 409, "conflict")
    assert await matched(client, passenger) == []
    assert stays["id"] not in [a for a, _ in await pairs(client, passenger)]


async def test_retried_publish_with_an_idempotency_key_notifies_once(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    await alert(client, passenger)
    headers = {**driver.headers, "Idempotency-Key": "ride-1"}
    body = {
        "origin": "Innopolis",
        "destination": "Kazan",
        "departure_at": future(),
        "seats_total": 2,
    }
    answers = [await client.post("/api/v1/rides", json=body, headers=headers) for _ in range(3)]
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(await matched(client, passenger)) == 1


async def test_a_deleted_account_hears_of_no_ride(
    client: httpx.AsyncClient, driver: Account, passenger: Account, db_conn: asyncpg.Connection
) -> None:
    await alert(client, passenger)
    r = await client.request(
        "DELETE",
        "/api/v1/users/me",
        json={"password": "correct-horse-42"},
        headers=passenger.headers,
    )
    assert r.status_code == 204, r.text
    await make_ride(client, driver)
    # Its notifications can no longer be read over REST: look in the database.
    stored = await db_conn.fetchval(
        "SELECT count(*) FROM notifications WHERE user_id = $1", passenger.id
    )
    assert stored == 0
    alerts = await db_conn.fetchval("SELECT count(*) FROM alerts WHERE user_id = $1", passenger.id)
    assert alerts == 0


# Pushed live -------------------------------------------------------------------------------


async def test_the_match_is_pushed_on_the_users_channel(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.http) as http:
        driver, passenger = await signup(http), await signup(http)
        wanted = await alert(http, passenger, max_price=300)
        async with ws_connect(live.ws_url, passenger.access_token) as ws:
            await ws.expect("welcome")
            ack = await ws.request({"op": "subscribe", "channel": f"user:{passenger.id}"})
            assert ack["type"] == "subscribed", ack
            ride = await make_ride(http, driver, price=500)
            await patch(http, driver, ride["id"], price=280)
            (event,) = await ws.events(1)
            assert event["channel"] == f"user:{passenger.id}"
            assert event["event"] == "notification.created" and event["seq"] == ack["seq"] + 1
            note = event["data"]
            assert note["kind"] == "ride.matched" and note["read_at"] is None
            assert note["data"] == {
                "alert_id": wanted["id"],
                "ride_id": ride["id"],
                "origin": "Innopolis",
                "destination": "Kazan",
                "departure_at": ride["departure_at"],
                "price": 280.0,
                "seats_available": 3,
            }
            r = await http.get("/api/v1/notifications", headers=passenger.headers)
            assert r.json()["items"] == [note]
            await patch(http, driver, ride["id"], price=270)
            assert await ws.silent()  # no second notification for the pair


# Cost --------------------------------------------------------------------------------------


async def test_the_match_query_looks_alerts_up_by_index(
    client: httpx.AsyncClient, driver: Account, passenger: Account, db_conn: asyncpg.Connection
) -> None:
    """With a few thousand alerts the planner probes the key index (docs/decisions.md D34): no
    scan of every alert per ride. The figures are bench/alerts.py's."""
    from server.alerts.matching import _BY_DESTINATION, _BY_ORIGIN

    await db_conn.execute(
        """INSERT INTO alerts (user_id, origin, destination, origin_key, destination_key)
           SELECT $1, 'Place ' || i, 'Town ' || i, 'place ' || i, 'town ' || i
           FROM generate_series(1, 3000) AS i""",
        passenger.id,
    )
    await db_conn.execute("ANALYZE alerts")
    ride = await make_ride(client, driver, origin="Place 17", destination="Town 17 centre")
    for stmt, index in ((_BY_ORIGIN, "ix_alerts_origin_key"),
                        (_BY_DESTINATION, "ix_alerts_destination_key")):  # fmt: skip
        sql = "EXPLAIN (COSTS OFF) " + str(stmt).replace(":ride_id", "$1")
        plan = "\n".join(r[0] for r in await db_conn.fetch(sql, ride["id"]))
        assert f"Index Scan on {index}" in plan, plan
        assert "Seq Scan on alerts" not in plan, plan
