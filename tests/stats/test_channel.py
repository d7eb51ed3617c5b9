"""The live `stats` channel (PROTOCOL.md section 6): admins only, the same object as REST, an
event promptly after subscribing, then at most one a second and only while something changes."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx

from tests.domain.conftest import make_ride
from tests.helpers import signup
from tests.live import LiveServer, WsClient, ws_connect
from tests.stats.conftest import KEYS, make_admin, stats


async def subscribe(ws: WsClient) -> None:
    await ws.expect("welcome")
    ack = await ws.request({"op": "subscribe", "channel": "stats", "id": 1})
    assert ack == {"type": "subscribed", "channel": "stats", "recovered": True, "id": 1}


async def next_stats(ws: WsClient, timeout: float = 5.0) -> dict[str, Any]:
    frame = await ws.expect("event", timeout)
    assert frame["channel"] == "stats" and frame["event"] == "stats" and "seq" not in frame
    data: dict[str, Any] = frame["data"]
    assert set(data) == KEYS, data
    return data


async def test_admin_gets_the_state_then_changes_only(
    live: LiveServer, http: httpx.AsyncClient, db_conn: Any
) -> None:
    admin, driver = await make_admin(http, db_conn), await signup(http)
    async with ws_connect(live.ws_url, admin.access_token) as ws:
        await subscribe(ws)
        first = await next_stats(ws)  # promptly: a dashboard is not left empty
        assert first == await stats(http, admin)
        assert first["sockets_open"] == 1 and first["users_online"] == 1
        assert await ws.silent(2.5)  # nothing changed: nothing pushed
        await make_ride(http, driver, origin="Innopolis", destination="Kazan")
        changed = await next_stats(ws)
        assert changed["rides_published_today"] == first["rides_published_today"] + 1
        assert changed["busiest_routes"] == [
            {"origin": "Innopolis", "destination": "Kazan", "rides": 1}
        ]
        assert await ws.silent(2.5)


async def test_non_admins_are_refused(live: LiveServer, http: httpx.AsyncClient) -> None:
    user = await signup(http)
    async with ws_connect(live.ws_url, user.access_token) as ws:
        await ws.expect("welcome")
        refused = await ws.request({"op": "subscribe", "channel": "stats", "id": "s"})
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        assert refused["id"] == "s"
        assert await ws.silent(1.5)  # and nothing is pushed to them
        bad = await ws.request({"op": "subscribe", "channel": "stats:1"})
        assert bad["type"] == "error" and bad["code"] == "bad_request"


async def test_at_most_one_event_a_second_while_it_keeps_changing(
    live: LiveServer, http: httpx.AsyncClient, db_conn: Any
) -> None:
    admin, driver = await make_admin(http, db_conn), await signup(http)
    async with ws_connect(live.ws_url, admin.access_token) as ws:
        await subscribe(ws)
        await next_stats(ws)
        arrivals = [time.monotonic()]
        published = 0

        async def publish() -> None:
            nonlocal published
            for _ in range(40):  # a change every 0.1 s for about 4 s
                await make_ride(http, driver)
                published += 1
                await asyncio.sleep(0.1)

        writer = asyncio.create_task(publish())
        last: dict[str, Any] = {}
        while not writer.done() or last.get("rides_published_today") != published:
            last = await next_stats(ws)
            arrivals.append(time.monotonic())
        await writer
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    print(f"{len(arrivals)} events for {published} changes; gaps {[round(g, 2) for g in gaps]}")
    assert len(arrivals) >= 3  # it kept pushing while things changed...
    assert all(gap >= 0.9 for gap in gaps), gaps  # ...never more than one a second
