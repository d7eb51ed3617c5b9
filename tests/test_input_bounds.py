"""Every value the database driver would refuse is refused at validation, in the contract's error
shape (issue 8): dates at the calendar's edges with offsets, a departure years ahead, numbers out
of range in tampered cursors, lone surrogates, odd If-Match values. Each case below was a 500."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.domain.conftest import make_ride
from tests.helpers import Account, assert_error, signup

EDGE_LATE = "9999-12-31T23:59:59-14:00"  # no UTC form: year 10000
EDGE_EARLY = "0001-01-01T00:00:00+14:00"  # no UTC form: year 0


def cursor(values: list[Any]) -> str:
    """A tampered cursor: the server's own encoding (JSON, URL-safe base64) of chosen values."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.fixture
async def user(client: httpx.AsyncClient) -> Account:
    return await signup(client)


@pytest.mark.parametrize(
    "params",
    [
        {"departure_from": EDGE_EARLY},
        {"departure_to": EDGE_LATE},
        {"cursor": cursor(["departure_at", EDGE_LATE, 1])},
        {"cursor": cursor(["departure_at", EDGE_EARLY, 1])},
        {"cursor": cursor(["price", "1e1000000", 1]), "sort": "price"},
        {"cursor": cursor(["price", "NaN", 1]), "sort": "price"},
        {"cursor": cursor(["driver_rating", "1e400", 1]), "sort": "driver_rating"},
        {"cursor": cursor(["departure_at", "2027-01-01T00:00:00+00:00", 2**70])},
        {"max_price": "4.4e307"},  # found by schemathesis (tests/test_openapi_fuzz.py)
        {"max_price": "inf"},
    ],
)
async def test_search_refuses_unrepresentable_dates_and_tampered_cursors(
    client: httpx.AsyncClient, user: Account, params: dict[str, str]
) -> None:
    r = await client.get("/api/v1/rides", params=params, headers=user.headers)
    assert_error(r, 422, "validation_error")


async def test_a_max_price_above_every_price_filters_nothing(
    client: httpx.AsyncClient, user: Account
) -> None:
    """Up to an alert's bound (1e9) a search's max_price is accepted; past the most a seat may
    cost (1e6, the column holds 1e8) it filters nothing more. 1e8 was a 500 (numeric overflow)."""
    await make_ride(client, user, price=1_000_000)
    for max_price in ("100000000", "999999999.5"):
        r = await client.get("/api/v1/rides", params={"max_price": max_price}, headers=user.headers)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 1


@pytest.mark.parametrize(
    "value", [[EDGE_LATE, 1], ["2027-01-01T00:00:00+00:00", 2**70], ["2027-01-01", 1]]
)
async def test_my_rides_refuses_tampered_cursors(
    client: httpx.AsyncClient, user: Account, value: list[Any]
) -> None:
    r = await client.get(
        "/api/v1/users/me/rides", params={"cursor": cursor(value)}, headers=user.headers
    )
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("value", [2**64, -(2**70), 0, True])
async def test_id_cursors_out_of_bigint_range_are_refused(
    client: httpx.AsyncClient, user: Account, value: Any
) -> None:
    for path in ("/api/v1/bookings", "/api/v1/notifications"):
        r = await client.get(path, params={"cursor": cursor([value])}, headers=user.headers)
        assert_error(r, 422, "validation_error")


@pytest.mark.parametrize(
    "departure",
    [EDGE_LATE, "9999-01-01T00:00:00Z", (datetime.now(UTC) + timedelta(days=40000)).isoformat()],
)
async def test_a_departure_beyond_the_horizon_is_refused(
    client: httpx.AsyncClient, user: Account, departure: str
) -> None:
    body = {"origin": "A", "destination": "B", "departure_at": departure, "seats_total": 2}
    r = await client.post("/api/v1/rides", json=body, headers=user.headers)
    error = assert_error(r, 422, "validation_error")
    assert error["details"][0]["field"] == "body.departure_at"
    ride = await make_ride(client, user)
    r = await client.patch(
        f"/api/v1/rides/{ride['id']}", json={"departure_at": departure}, headers=user.headers
    )
    assert_error(r, 422, "validation_error")


async def test_a_departure_within_the_horizon_is_accepted(
    client: httpx.AsyncClient, user: Account
) -> None:
    ride = await make_ride(
        client, user, departure_at=(datetime.now(UTC) + timedelta(days=3000)).isoformat()
    )
    assert ride["status"] == "scheduled"


async def test_lone_surrogates_are_refused_in_every_text(
    client: httpx.AsyncClient, user: Account
) -> None:
    ride = await make_ride(client, user)
    cases = [
        ("PATCH", "/api/v1/users/me", {"bio": "\udfff"}),
        ("PATCH", f"/api/v1/rides/{ride['id']}", {"notes": "a\ud800b"}),
        ("POST", "/api/v1/rides", {"origin": "\ud800", "destination": "B",
                                   "departure_at": ride["departure_at"], "seats_total": 1}),
    ]  # fmt: skip
    for method, path, body in cases:
        content = json.dumps(body).encode()  # "\ud800" escapes: valid JSON, not valid Unicode
        headers = {**user.headers, "content-type": "application/json"}
        r = await client.request(method, path, content=content, headers=headers)
        assert_error(r, 422, "validation_error")


@pytest.mark.parametrize(
    ("if_match", "status", "code"),
    [
        ("\u00b2".encode("latin-1"), 400, "bad_request"),  # isdigit() but not a number
        (b"\xd9\xa3", 400, "bad_request"),
        (b'"1", "2"', 400, "bad_request"),
        (b"99999999999999999999999999", 412, "precondition_failed"),
        (b"9" * 200, 400, "bad_request"),
    ],
)
async def test_odd_if_match_values_get_the_contracts_errors(
    client: httpx.AsyncClient, user: Account, if_match: bytes, status: int, code: str
) -> None:
    ride = await make_ride(client, user)
    r = await client.patch(
        f"/api/v1/rides/{ride['id']}",
        json={"notes": "x"},
        headers={**user.headers, "If-Match": if_match},  # type: ignore[dict-item]
    )
    assert_error(r, status, code)
