"""PROTOCOL.md sections 1-5 where they speak of real processes and of more than one instance:
the handshake and frame limits of `kuda serve` itself, single-use tickets and token rotation
across instances, concurrent writers on two instances, idempotency and the seat invariant."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.acceptance.conftest import Deployment, events_until
from tests.domain.conftest import book, make_ride
from tests.helpers import Account, assert_error, login, signup
from tests.live import WsClient, ws_connect

pytestmark = pytest.mark.slow

WELCOME_KEYS = {"type", "connection_id", "user_id", "protocol", "heartbeat_s", "expires_at"}


async def test_the_token_pair_has_the_contracts_fields(a: httpx.AsyncClient) -> None:
    account = await signup(a)
    body = (await login(a, account.email)).json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and isinstance(body["expires_in"], int)


async def test_a_rotated_refresh_token_stops_working_on_every_instance(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    rotated = await a.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert rotated.status_code == 200, rotated.text
    assert set(rotated.json()) >= {"access_token", "refresh_token"}
    again = await b.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert_error(again, 401, "unauthorized")


async def test_the_welcome_frame_for_each_credential(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    url = kuda.ws_url(kuda.b)
    async with ws_connect(url, account.access_token) as ws:
        welcome = await ws.expect("welcome")
    assert set(welcome) == WELCOME_KEYS
    assert (welcome["user_id"], welcome["protocol"]) == (account.id, 1)
    assert isinstance(welcome["heartbeat_s"], int) and isinstance(welcome["connection_id"], str)
    offered = ["kuda.v1", f"kuda.bearer.{account.access_token}"]
    async with connect(url, subprotocols=offered, open_timeout=10) as conn:  # type: ignore[arg-type]
        assert conn.subprotocol == "kuda.v1"
        selected = conn.response.headers.get("Sec-WebSocket-Protocol")
        assert selected == "kuda.v1"
        by_subprotocol = await WsClient(conn).expect("welcome")
    assert by_subprotocol["user_id"] == account.id
    ticket = (await a.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()
    assert set(ticket) == {"ticket", "expires_in"} and 0 < ticket["expires_in"] <= 60
    async with ws_connect(f"{url}?ticket={ticket['ticket']}") as ws:
        by_ticket = await ws.expect("welcome")
    assert by_ticket["expires_at"] == welcome["expires_at"]


async def test_a_ticket_is_single_use_across_instances(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    ticket = (await a.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()["ticket"]
    async with ws_connect(f"{kuda.ws_url(kuda.a)}?ticket={ticket}") as ws:
        await ws.expect("welcome")
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{kuda.ws_url(kuda.b)}?ticket={ticket}"):
            pass
    assert refused.value.response.status_code in (401, 403)


async def test_a_token_in_the_url_is_refused_even_next_to_a_valid_header(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    for name in ("token", "access_token"):
        url = f"{kuda.ws_url(kuda.a)}?{name}={account.access_token}"
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url, account.access_token):
                pass
        assert refused.value.response.status_code in (401, 403)


async def test_kuda_serve_closes_1009_over_64_kib_and_1003_on_binary(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    for payload, code in (("x" * (64 * 1024 + 1), 1009), (b"\x00\x01", 1003)):
        async with kuda.socket(kuda.b, account.access_token) as ws:
            await ws.send(payload)
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.conn.close_code == code


async def test_a_frame_just_under_64_kib_is_answered(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    async with kuda.socket(kuda.a, account.access_token) as ws:
        frame = '{"op": "ping", "pad": "' + "x" * (60 * 1024) + '"}'
        assert len(frame.encode()) < 64 * 1024
        reply = await ws.request(frame)  # type: ignore[arg-type]
        assert reply["type"] in ("pong", "error"), reply


async def test_subscribe_acks_and_refusals(kuda: Deployment, a: httpx.AsyncClient) -> None:
    driver, stranger = await signup(a), await signup(a)
    ride = await make_ride(a, driver)
    async with kuda.socket(kuda.b, stranger.access_token) as ws:
        ack = await ws.request({"op": "subscribe", "channel": f"ride:{ride['id']}", "id": 1})
        assert ack == {"type": "subscribed", "channel": f"ride:{ride['id']}", "seq": 0,
                       "recovered": True, "id": 1}  # fmt: skip
        live = await ws.request({"op": "subscribe", "channel": "rides"})
        assert live["type"] == "subscribed" and "seq" not in live, live
        for channel, code in (
            ("nonsense", "bad_request"),
            (f"ride:{2**40}", "not_found"),
            (f"ride:{ride['id']}:chat", "forbidden"),
            (f"user:{driver.id}", "forbidden"),
        ):
            refused = await ws.request({"op": "subscribe", "channel": channel, "id": "x"})
            assert refused["type"] == "error" and refused["code"] == code, (channel, refused)
            assert refused["id"] == "x"
        bye = await ws.request({"op": "unsubscribe", "channel": "rides"})
        assert bye == {"type": "unsubscribed", "channel": "rides"}
        assert await ws.request({"op": "ping", "id": 5}) == {"type": "pong", "id": 5}


async def test_concurrent_writers_on_two_instances_reach_every_subscriber_once_in_order(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver)
    passenger = await signup(b)
    booking = (await book(b, passenger, ride["id"])).json()
    assert (
        await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    ).status_code == 200
    channel, n = f"ride:{ride['id']}:chat", 20
    async with (
        kuda.socket(kuda.a, driver.access_token) as on_a,
        kuda.socket(kuda.b, passenger.access_token) as on_b,
    ):
        for ws in (on_a, on_b):
            assert (await ws.request({"op": "subscribe", "channel": channel}))["seq"] == 0

        async def write(http: httpx.AsyncClient, user: Account, tag: str) -> None:
            for i in range(n):
                r = await http.post(
                    f"/api/v1/rides/{ride['id']}/messages",
                    json={"body": f"{tag}{i}"},
                    headers=user.headers,
                )
                assert r.status_code == 201, r.text

        await asyncio.gather(write(a, driver, "d"), write(b, passenger, "p"))
        for ws in (on_a, on_b):
            frames = await durable(ws, 2 * n)
            assert [f["seq"] for f in frames] == list(range(1, 2 * n + 1))
            assert await durable(ws, 0, quiet=0.3) == []
    replay = await b.get(f"/api/v1/channels/{channel}/events", params={"since": 0},
                         headers=driver.headers)  # fmt: skip
    body = replay.json()
    assert set(body) == {"items", "latest_seq", "recovered", "next_since"}
    assert (body["latest_seq"], body["recovered"], body["next_since"]) == (2 * n, True, None)
    assert [e["seq"] for e in body["items"]] == list(range(1, 2 * n + 1))
    assert body["items"][0] == frames[0]


async def durable(ws: WsClient, n: int, quiet: float = 0.0) -> list[dict[str, Any]]:
    """The next `n` durable events (ephemeral presence events skipped); with `quiet`, then
    whatever durable events arrive until nothing comes for that long."""
    out: list[dict[str, Any]] = []
    while len(out) < n or quiet:
        try:
            frame = await ws.recv(quiet if len(out) >= n else 10.0)
        except TimeoutError:
            return out
        assert frame["type"] == "event", frame
        if "seq" in frame:
            out.append(frame)
    return out


async def test_subscribe_with_since_replays_what_another_instance_wrote(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver)
    for price in (300, 310, 320):
        r = await b.patch(f"/api/v1/rides/{ride['id']}", json={"price": price},
                          headers=driver.headers)  # fmt: skip
        assert r.status_code == 200, r.text
    async with kuda.socket(kuda.a, driver.access_token) as ws:
        await ws.send({"op": "subscribe", "channel": f"ride:{ride['id']}", "since": 1})
        replayed = [await ws.expect("event") for _ in range(2)]
        assert [(f["seq"], f["event"]) for f in replayed] == [(2, "ride.updated"),
                                                              (3, "ride.updated")]  # fmt: skip
        ack = await ws.expect("subscribed")
        assert (ack["seq"], ack["recovered"]) == (3, True)


async def test_one_idempotency_key_on_two_instances_at_once_makes_one_booking(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    headers = {**passenger.headers, "Idempotency-Key": uuid.uuid4().hex}
    url = f"/api/v1/rides/{ride['id']}/bookings"
    answers = await asyncio.gather(
        *(http.post(url, json={"seats": 1}, headers=headers) for http in (a, b, a, b))
    )
    created = [r for r in answers if r.status_code == 201]
    assert created and all(r.status_code in (201, 409) for r in answers), [r.text for r in answers]
    assert len({r.json()["id"] for r in created}) == 1
    mine = (await a.get("/api/v1/bookings", headers=passenger.headers)).json()["items"]
    assert [x["ride_id"] for x in mine].count(ride["id"]) == 1
    other = await b.post(url, json={"seats": 2}, headers=headers)
    assert_error(other, 422, "validation_error")


async def test_confirmed_seats_never_exceed_seats_total_on_two_instances(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    ride = await make_ride(a, driver, seats_total=3)
    passengers = [await signup(b) for _ in range(6)]
    bookings = [(await book(b, p, ride["id"])).json() for p in passengers]
    answers = await asyncio.gather(
        *(
            (a if i % 2 else b).post(f"/api/v1/bookings/{x['id']}/confirm", headers=driver.headers)
            for i, x in enumerate(bookings)
        )
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 3 + [409] * 3, statuses
    shown = (await a.get(f"/api/v1/rides/{ride['id']}", headers=driver.headers)).json()
    assert shown["seats_available"] == 0


async def test_typing_reaches_the_other_members_not_the_sender(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver, passenger = await signup(a), await signup(b)
    ride = await make_ride(a, driver)
    booking = (await book(b, passenger, ride["id"])).json()
    await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    channel = f"ride:{ride['id']}:chat"
    async with (
        kuda.socket(kuda.a, driver.access_token) as typist,
        kuda.socket(kuda.b, passenger.access_token) as reader,
    ):
        for ws in (typist, reader):
            assert (await ws.request({"op": "subscribe", "channel": channel}))["type"] == (
                "subscribed"
            )
        await events_until(typist, "presence.joined")
        await typist.send({"op": "typing", "channel": channel})
        frame: dict[str, Any] = (await events_until(reader, "typing"))[-1]
        assert frame["data"] == {"user_id": driver.id} and "seq" not in frame
        assert await typist.silent(0.5)


TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def times_in(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string in `value` that looks like an RFC 3339 instant, with its path."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in times_in(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in times_in(v, f"{path}[{i}]")]
    if isinstance(value, str) and TIME.match(value):
        return [(path, value)]
    return []


async def test_every_time_is_an_rfc_3339_utc_string(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    """Section 0: "Times are RFC 3339 UTC strings" (docs/protocol.md: with a `Z` suffix), in
    REST bodies, frames and notification data alike."""
    driver, passenger = await signup(a), await signup(b)
    alert = (
        await b.post(
            "/api/v1/alerts",
            json={
                "origin": "Innopolis",
                "destination": "Kazan",
                "departure_from": "2026-01-01T03:00:00+03:00",
            },
            headers=passenger.headers,
        )
    ).json()
    async with kuda.socket(kuda.a, passenger.access_token) as ws:
        await ws.request({"op": "subscribe", "channel": f"user:{passenger.id}"})
        ride = await make_ride(
            a, driver, departure_at="2099-06-01T12:00:00+03:00", origin="Innopolis",
            destination="Kazan",
        )  # fmt: skip
        booking = (await book(b, passenger, ride["id"])).json()
        await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
        message = (
            await b.post(
                f"/api/v1/rides/{ride['id']}/messages",
                json={"body": "hi"},
                headers=passenger.headers,
            )
        ).json()
        frames = await events_until(ws, "booking.confirmed")
        welcome_expiry = await ws.request({"op": "auth", "token": passenger.access_token})
    notes = (await a.get("/api/v1/notifications", headers=passenger.headers)).json()
    me = (await a.get("/api/v1/users/me", headers=passenger.headers)).json()
    shown = (await a.get(f"/api/v1/rides/{ride['id']}", headers=passenger.headers)).json()
    found = times_in(
        {
            "alert": alert,
            "ride": ride,
            "shown": shown,
            "booking": booking,
            "message": message,
            "frames": frames,
            "authed": welcome_expiry,
            "notifications": notes,
            "me": me,
        }
    )
    assert len(found) >= 10, found
    assert [t for t in found if not UTC_TIME.match(t[1])] == []


async def test_an_op_flood_gets_rate_limited_then_closed_4429(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    async with kuda.socket(kuda.a, account.access_token) as ws:
        for _ in range(300):
            try:
                await ws.send({"op": "ping"})
            except ConnectionClosed:
                break
        codes: list[str] = []
        with pytest.raises(ConnectionClosed):
            while True:
                frame = await ws.recv()
                if frame["type"] == "error":
                    codes.append(frame["code"])
        assert codes and set(codes) == {"rate_limited"}, codes
        assert ws.conn.close_code == 4429
