"""Substring place search through the distinct place names (ride_places, docs/decisions.md D38):
what a searcher sees is what a substring filter over every ride would show, however the rides'
places came to be (created, edited) and however many names a fragment matches."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.rides import search
from tests.domain.conftest import make_ride
from tests.helpers import Account, assert_error


async def _ids(client: httpx.AsyncClient, who: Account, **params: Any) -> set[int]:
    r = await client.get("/api/v1/rides", params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    return {ride["id"] for ride in r.json()["items"]}


async def test_a_new_place_is_found_by_any_part_of_its_name_at_once(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    ride = await make_ride(client, driver, origin="Zelenodolsk Station", destination="Bolgar")
    assert await _ids(client, passenger, origin="NODOLSK") == {ride["id"]}
    assert await _ids(client, passenger, destination="olga") == {ride["id"]}
    assert await _ids(client, passenger, origin="nodolsk", destination="bolgar") == {ride["id"]}
    r = await client.patch(
        f"/api/v1/rides/{ride['id']}", json={"origin": "Laishevo"}, headers=driver.headers
    )
    assert r.status_code == 200, r.text
    assert await _ids(client, passenger, origin="aishev") == {ride["id"]}
    assert await _ids(client, passenger, origin="nodolsk") == set()


async def test_a_route_no_ride_takes_between_common_places_is_empty(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    there = await make_ride(client, driver, origin="Innopolis", destination="Kazan")
    back = await make_ride(client, driver, origin="Kazan", destination="Innopolis")
    assert await _ids(client, passenger, origin="innop", destination="kazan") == {there["id"]}
    assert await _ids(client, passenger, origin="kaz", destination="innopolis") == {back["id"]}
    r = await client.get(
        "/api/v1/rides",
        params={"origin": "innop", "destination": "Innopolis"},
        headers=passenger.headers,
    )
    assert r.status_code == 200 and r.json()["items"] == []
    assert "suggestions" in r.json()
    assert await _ids(client, passenger, origin="Nowhere at all") == set()
    bad = await client.get(
        "/api/v1/rides",
        params={"origin": "Nowhere at all", "cursor": "!!!"},
        headers=passenger.headers,
    )
    assert_error(bad, 422, "validation_error")


async def test_a_fragment_matching_many_places_finds_every_ride(
    client: httpx.AsyncClient,
    driver: Account,
    passenger: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "MAX_PLACES", 2)  # past it the rides' own substring filter runs
    rides = [
        await make_ride(client, driver, origin=f"Alpha {n}", destination="Kazan") for n in range(4)
    ]
    assert await _ids(client, passenger, origin="alpha") == {r["id"] for r in rides}
    assert await _ids(client, passenger, origin="alpha 3", destination="az") == {rides[3]["id"]}


async def test_like_wildcards_in_a_place_are_literal(
    client: httpx.AsyncClient, driver: Account, passenger: Account
) -> None:
    underscore = await make_ride(client, driver, origin="Gate a_b", destination="Kazan")
    await make_ride(client, driver, origin="Gate axb", destination="Kazan")
    percent = await make_ride(client, driver, origin="Gate 100%", destination="Kazan")
    assert await _ids(client, passenger, origin="a_b") == {underscore["id"]}
    assert await _ids(client, passenger, origin="0%") == {percent["id"]}
    assert await _ids(client, passenger, origin="%") == {percent["id"]}
    assert await _ids(client, passenger, origin="gate\\") == set()
