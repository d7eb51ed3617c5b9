"""PROTOCOL.md section 7, the Python client, used exactly as the contract shows it
(`async with Client(url, get_token) as c: async for event in c.subscribe("user:42")`), against
the two instances. The JavaScript SDK runs its own live tests (`node --test clients/js/test/`)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kuda.client import Client
from tests.acceptance.conftest import Deployment
from tests.domain.conftest import book, make_ride
from tests.helpers import signup

pytestmark = pytest.mark.slow


async def test_the_python_client_follows_a_channel_and_sends(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    async with Client(kuda.a.base_url, lambda: driver.access_token) as client:
        sub = client.subscribe(f"user:{driver.id}")
        await sub
        booking = (await book(b, passenger, ride["id"])).json()
        seen: list[str] = []

        async def until_requested() -> None:
            async for event in sub:
                seen.append(event["event"])
                if event["event"] == "booking.requested":
                    assert event["data"]["id"] == booking["id"]
                    return

        await asyncio.wait_for(until_requested(), 10)
        stored = await client.send(f"ride:{ride['id']}:chat", "at the north gate")
        assert stored["body"] == "at the north gate" and stored["ride_id"] == ride["id"]
        assert "booking.requested" in seen
        assert await client.presence(f"ride:{ride['id']}:chat") == []
