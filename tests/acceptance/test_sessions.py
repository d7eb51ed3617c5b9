"""PROTOCOL.md section 6, "Sessions end everywhere they should", on two instances."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from tests.acceptance.conftest import Deployment, events_until
from tests.domain.conftest import book, make_ride
from tests.helpers import PASSWORD, Account, assert_error, login, register, signup
from tests.live import WsClient, ws_connect
from tests.test_sessions_cluster import close_code

pytestmark = pytest.mark.slow

WITHIN_S = 2.0
"""The contract's bound for closing a revoked family's sockets on every instance."""


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    value: dict[str, Any] = orjson.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return value


async def second_session(http: httpx.AsyncClient, account: Account) -> Account:
    body = (await login(http, account.email)).json()
    return Account(account.user, account.email, body["access_token"], body["refresh_token"])


async def me_status(http: httpx.AsyncClient, token: str) -> int:
    r = await http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    return r.status_code


async def closed_within(ws: WsClient, since: float) -> tuple[int | None, float]:
    """The close code of a socket the server closes, and the seconds it took from `since`."""
    return await close_code(ws, since, timeout=WITHIN_S + 5)


async def test_access_tokens_carry_the_sid_of_their_refresh_token_family(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    other = await second_session(b, account)
    sid = claims(account.access_token)["sid"]
    assert sid and claims(other.access_token)["sid"] != sid
    rotated = await b.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert rotated.status_code == 200, rotated.text
    assert claims(rotated.json()["access_token"])["sid"] == sid


async def test_logout_closes_the_familys_sockets_4401_on_every_instance_within_2_s(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    other = await second_session(a, account)
    async with (
        kuda.socket(kuda.a, account.access_token) as on_a,
        kuda.socket(kuda.b, account.access_token) as on_b,
        kuda.socket(kuda.b, other.access_token) as authed_on_b,
        kuda.socket(kuda.a, other.access_token) as bystander,
    ):
        reply = await authed_on_b.request({"op": "auth", "token": account.access_token})
        assert reply["type"] == "authed", reply
        r = await a.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
        assert r.status_code == 204, r.text
        logged_out = time.monotonic()
        results = await asyncio.gather(
            *(closed_within(ws, logged_out) for ws in (on_a, on_b, authed_on_b))
        )
        print("closed after", [f"{s:.3f} s" for _, s in results])
        assert [code for code, _ in results] == [4401, 4401, 4401]
        assert max(seconds for _, seconds in results) <= WITHIN_S
        assert (await bystander.request({"op": "ping"}))["type"] == "pong"


async def test_logout_closes_a_socket_opened_with_the_family_after_it_auth_ed_with_another(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    """ "Every socket opened or `auth`-ed with a token of that family": opened counts too."""
    account = await signup(a)
    other = await second_session(a, account)
    async with kuda.socket(kuda.b, account.access_token) as ws:
        reply = await ws.request({"op": "auth", "token": other.access_token})
        assert reply["type"] == "authed", reply
        r = await a.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
        assert r.status_code == 204, r.text
        code, seconds = await closed_within(ws, time.monotonic())
        assert code == 4401 and seconds <= WITHIN_S


async def test_logout_closes_a_socket_opened_with_a_ticket_of_the_family(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    ticket = await b.post("/api/v1/auth/ws-ticket", headers=account.headers)
    assert ticket.status_code == 200, ticket.text
    url = kuda.ws_url(kuda.b) + "?ticket=" + ticket.json()["ticket"]
    async with ws_connect(url) as ws:
        await ws.expect("welcome")
        r = await a.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
        assert r.status_code == 204, r.text
        code, seconds = await closed_within(ws, time.monotonic())
        assert code == 4401 and seconds <= WITHIN_S


async def test_a_ticket_of_a_logged_out_family_is_refused(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    ticket = (await a.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()["ticket"]
    r = await a.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert r.status_code == 204, r.text
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{kuda.ws_url(kuda.b)}?ticket={ticket}"):
            pass
    assert refused.value.response.status_code == 401


async def test_a_logged_out_familys_token_opens_no_socket_and_auths_none(
    kuda: Deployment, a: httpx.AsyncClient
) -> None:
    account = await signup(a)
    other = await second_session(a, account)
    r = await a.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert r.status_code == 204, r.text
    for server in kuda.instances:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(kuda.ws_url(server), account.access_token):
                pass
        assert refused.value.response.status_code == 401
    async with kuda.socket(kuda.b, other.access_token) as ws:
        reply = await ws.request({"op": "auth", "token": account.access_token, "id": 1})
        assert reply["type"] == "error" and reply["code"] == "unauthorized", reply
        assert (await ws.request({"op": "ping"}))["type"] == "pong"


async def test_logout_makes_rest_answer_401_to_the_familys_access_tokens(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    other = await second_session(a, account)
    rotated = await a.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    pair = rotated.json()
    r = await b.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 204, r.text
    for http in (a, b):
        for token in (account.access_token, pair["access_token"]):
            refused = await http.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
            )
            assert_error(refused, 401, "unauthorized")
        assert await me_status(http, other.access_token) == 200


async def test_password_change_is_204_and_ends_every_session_and_socket(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    other = await second_session(b, account)
    new_password = "another-horse-77"
    async with (
        kuda.socket(kuda.a, account.access_token) as first,
        kuda.socket(kuda.b, other.access_token) as second,
    ):
        r = await b.post(
            "/api/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=account.headers,
        )
        assert r.status_code == 204, r.text
        changed = time.monotonic()
        results = await asyncio.gather(
            closed_within(first, changed), closed_within(second, changed)
        )
        assert [code for code, _ in results] == [4401, 4401]
        assert max(seconds for _, seconds in results) <= WITHIN_S
    for http in (a, b):
        for session in (account, other):
            assert await me_status(http, session.access_token) == 401
            refresh = await http.post(
                "/api/v1/auth/refresh", json={"refresh_token": session.refresh_token}
            )
            assert refresh.status_code == 401, refresh.text
    assert (await login(a, account.email)).status_code == 401
    assert (await login(b, account.email, new_password)).status_code == 200


async def test_password_change_with_a_wrong_current_password_is_403(
    a: httpx.AsyncClient,
) -> None:
    account = await signup(a)
    r = await a.post(
        "/api/v1/users/me/password",
        json={"current_password": "not-the-password", "new_password": "another-horse-77"},
        headers=account.headers,
    )
    assert_error(r, 403, "forbidden")
    assert await me_status(a, account.access_token) == 200
    assert (await login(a, account.email)).status_code == 200


async def test_password_change_to_a_weak_password_is_422(a: httpx.AsyncClient) -> None:
    account = await signup(a)
    r = await a.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=account.headers,
    )
    error = assert_error(r, 422, "validation_error")
    assert "new_password" in orjson.dumps(error["details"]).decode()
    assert await me_status(a, account.access_token) == 200


async def test_a_weak_new_password_is_422_even_with_a_wrong_current_one(
    a: httpx.AsyncClient,
) -> None:
    """The contract's check order: 422 for a malformed body before 403."""
    account = await signup(a)
    r = await a.post(
        "/api/v1/users/me/password",
        json={"current_password": "not-the-password", "new_password": "short"},
        headers=account.headers,
    )
    assert_error(r, 422, "validation_error")


async def test_changing_the_password_needs_a_valid_token(a: httpx.AsyncClient) -> None:
    r = await a.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another-horse-77"},
    )
    assert_error(r, 401, "unauthorized")


async def test_deleting_the_account_leaves_no_email_phone_or_name(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a, display_name="Vanishing Vera", phone="+79990001122")
    viewer = await signup(b)
    r = await b.request(
        "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=account.headers
    )
    assert r.status_code == 204, r.text
    profile = await a.get(f"/api/v1/users/{account.id}", headers=viewer.headers)
    if profile.status_code == 200:
        text = profile.text
        assert "Vanishing Vera" not in text and "+79990001122" not in text
        assert account.email not in text
    else:
        assert_error(profile, 404, "not_found")
    assert (await login(a, account.email)).status_code == 401
    again = await register(b, account.email)
    assert again.status_code == 201, again.text


async def test_deleting_the_account_with_a_wrong_password_is_403_and_keeps_it(
    a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    r = await b.request(
        "DELETE", "/api/v1/users/me", json={"password": "not-the-password"}, headers=account.headers
    )
    assert_error(r, 403, "forbidden")
    assert await me_status(a, account.access_token) == 200
    assert (await login(b, account.email)).status_code == 200


async def test_deleting_the_account_ends_its_sessions_and_sockets(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    account = await signup(a)
    other = await second_session(b, account)
    async with (
        kuda.socket(kuda.a, account.access_token) as first,
        kuda.socket(kuda.b, other.access_token) as second,
    ):
        r = await a.request(
            "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=account.headers
        )
        assert r.status_code == 204, r.text
        deleted = time.monotonic()
        results = await asyncio.gather(
            closed_within(first, deleted), closed_within(second, deleted)
        )
        assert [code for code, _ in results] == [4401, 4401]
    for http in (a, b):
        for session in (account, other):
            assert await me_status(http, session.access_token) == 401


async def test_deleting_the_account_cancels_its_future_rides_with_the_usual_events(
    kuda: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient
) -> None:
    driver = await signup(a)
    passenger = await signup(b)
    watcher = await signup(b)
    ride = await make_ride(a, driver)
    booking = (await book(b, passenger, ride["id"])).json()
    confirmed = await a.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=driver.headers)
    assert confirmed.status_code == 200, confirmed.text
    async with (
        kuda.socket(kuda.b, watcher.access_token) as ride_ws,
        kuda.socket(kuda.a, passenger.access_token) as user_ws,
        kuda.socket(kuda.b, watcher.access_token) as rides_ws,
        kuda.socket(kuda.b, passenger.access_token) as chat_ws,
    ):
        for ws, channel in (
            (ride_ws, f"ride:{ride['id']}"),
            (user_ws, f"user:{passenger.id}"),
            (rides_ws, "rides"),
            (chat_ws, f"ride:{ride['id']}:chat"),
        ):
            ack = await ws.request({"op": "subscribe", "channel": channel})
            assert ack["type"] == "subscribed", ack
        r = await b.request(
            "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=driver.headers
        )
        assert r.status_code == 204, r.text
        ride_events = {f["event"]: f["data"] for f in await events_until(ride_ws, "ride.cancelled")}
        if "booking.cancelled" not in ride_events:
            ride_events.update(
                {f["event"]: f["data"] for f in await events_until(ride_ws, "booking.cancelled")}
            )
        assert ride_events["ride.cancelled"]["status"] == "cancelled"
        assert ride_events["ride.cancelled"]["id"] == ride["id"]
        assert ride_events["booking.cancelled"]["booking_id"] == booking["id"]
        ended = await chat_ws.recv()
        assert ended == {
            "type": "unsubscribed",
            "channel": f"ride:{ride['id']}:chat",
            "reason": "forbidden",
        }
        live = await events_until(rides_ws, "ride.cancelled")
        assert live[-1]["data"]["id"] == ride["id"] and "seq" not in live[-1]
        mine = await events_until(user_ws, "booking.cancelled")
        assert mine[-1]["data"]["id"] == booking["id"]
    shown = await b.get(f"/api/v1/rides/{ride['id']}", headers=watcher.headers)
    assert shown.json()["status"] == "cancelled"
    notes = await a.get("/api/v1/notifications", headers=passenger.headers)
    kinds = {n["kind"] for n in notes.json()["items"]}
    assert "ride.cancelled" in kinds, kinds
    bookings = await a.get("/api/v1/bookings", headers=passenger.headers)
    assert [x["status"] for x in bookings.json()["items"] if x["id"] == booking["id"]] == [
        "cancelled"
    ]
