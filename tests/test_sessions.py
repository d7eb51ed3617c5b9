"""Sessions end everywhere they should (PROTOCOL.md section 6): `sid`, logout, refresh reuse,
password change, account deletion; REST 401, refused tickets, sockets closed 4401."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth.sessions import EndedSessions, SessionEnded, SessionStateUnknown
from server.auth.tokens import TokenClaims
from server.config import Settings
from server.db import commit
from tests.conftest import JWT_SECRET
from tests.helpers import PASSWORD, Account, assert_error, login, signup
from tests.live import LiveServer, WsClient, ws_connect

NEW_PASSWORD = "another-horse-77"


async def closed_with(ws: WsClient, timeout: float = 10.0) -> int | None:
    """Wait for the server to close the socket; its close code."""
    await asyncio.wait_for(ws.conn.wait_closed(), timeout)
    return ws.conn.close_code


async def _second_session(client: httpx.AsyncClient, account: Account) -> Account:
    r = await login(client, account.email)
    assert r.status_code == 200, r.text
    body = r.json()
    return Account(account.user, account.email, body["access_token"], body["refresh_token"])


async def _me(client: httpx.AsyncClient, account: Account) -> httpx.Response:
    return await client.get("/api/v1/users/me", headers=account.headers)


async def _search(client: httpx.AsyncClient, account: Account) -> httpx.Response:
    return await client.get("/api/v1/rides", headers=account.headers)


def _legacy_token(user_id: int) -> str:
    """An access token as issued before tokens carried `sid`."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": str(uuid.uuid4()),
        "typ": "access",
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


# REST ---------------------------------------------------------------------------------------


async def test_logout_ends_the_session_on_rest_and_tickets(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    other = await _second_session(client, account)
    assert (await _me(client, account)).status_code == 200
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert r.status_code == 204
    assert_error(await _me(client, account), 401, "unauthorized")
    assert_error(await _search(client, account), 401, "unauthorized")
    ticket = await client.post("/api/v1/auth/ws-ticket", headers=account.headers)
    assert_error(ticket, 401, "unauthorized")
    # The user's other session is another family: untouched.
    assert (await _me(client, other)).status_code == 200
    assert (await client.post("/api/v1/auth/ws-ticket", headers=other.headers)).status_code == 200


async def test_refresh_reuse_ends_the_access_tokens_of_the_family(
    client: httpx.AsyncClient,
) -> None:
    account = await signup(client)
    first = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    fresh = first.json()
    fresh_headers = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert (await client.get("/api/v1/users/me", headers=fresh_headers)).status_code == 200
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert_error(replay, 401, "unauthorized")
    assert_error(await client.get("/api/v1/users/me", headers=fresh_headers), 401, "unauthorized")
    assert_error(await _me(client, account), 401, "unauthorized")


async def test_password_change_ends_every_session(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    other = await _second_session(client, account)
    legacy = {"Authorization": f"Bearer {_legacy_token(account.id)}"}
    assert (await client.get("/api/v1/users/me", headers=legacy)).status_code == 200
    url = "/api/v1/users/me/password"
    wrong = await client.post(
        url,
        json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
        headers=account.headers,
    )
    assert_error(wrong, 403, "forbidden")
    weak = await client.post(
        url, json={"current_password": PASSWORD, "new_password": "short"}, headers=account.headers
    )
    error = assert_error(weak, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["body.new_password"]
    anonymous = await client.post(
        url, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert_error(anonymous, 401, "unauthorized")
    assert (await _me(client, account)).status_code == 200  # nothing ended so far
    r = await client.post(
        url, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=account.headers,
    )  # fmt: skip
    assert r.status_code == 204 and r.content == b""
    for session in (account, other):
        assert_error(await _me(client, session), 401, "unauthorized")
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": session.refresh_token}
        )
        assert_error(refreshed, 401, "unauthorized")
    assert_error(await client.get("/api/v1/users/me", headers=legacy), 401, "unauthorized")
    assert_error(await login(client, account.email, PASSWORD), 401, "unauthorized")
    again = await login(client, account.email, NEW_PASSWORD)
    assert again.status_code == 200
    headers = {"Authorization": f"Bearer {again.json()['access_token']}"}
    assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 200


async def test_tokens_issued_before_sid_keep_working(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    legacy = {"Authorization": f"Bearer {_legacy_token(account.id)}"}
    await client.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert (await client.get("/api/v1/users/me", headers=legacy)).status_code == 200
    assert (await client.post("/api/v1/auth/ws-ticket", headers=legacy)).status_code == 200


async def test_token_responses_are_never_stored(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    r = await login(client, account.email)
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}
    )
    assert refreshed.headers["cache-control"] == "no-store"
    headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    ticket = await client.post("/api/v1/auth/ws-ticket", headers=headers)
    assert ticket.headers["cache-control"] == "no-store"
    assert (await client.get("/api/v1/users/me", headers=headers)).headers[
        "cache-control"
    ] == "no-store"
    assert (await client.get("/healthz")).headers["x-content-type-options"] == "nosniff"
    assert_error(await client.get("/api/v1/nope"), 404, "not_found")


# The mirror ---------------------------------------------------------------------------------


async def test_the_check_refuses_when_the_state_is_unknown(settings: Settings, app: Any) -> None:
    """No confirmed poll within SESSION_STALE_S: a token's state is unknown, never passed."""
    now = [1000.0]
    maker: async_sessionmaker[AsyncSession] = app.state.read_sessionmaker
    sessions = EndedSessions(settings, maker, clock=lambda: now[0])
    claims = TokenClaims(
        user_id=1,
        jti=uuid.uuid4(),
        typ="access",
        issued_at=datetime.now(UTC),
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        session_id=uuid.uuid4(),
    )
    with pytest.raises(SessionStateUnknown):
        sessions.check(claims)  # never synced
    await sessions.sync()
    sessions.check(claims)
    async with app.state.sessionmaker() as session:
        await sessions.end(session, [str(claims.session_id)], 1, "logout")
        await commit(session)
    with pytest.raises(SessionEnded):
        sessions.check(claims)
    # Another instance's mirror learns it by polling PostgreSQL.
    other = EndedSessions(settings, maker, clock=lambda: now[0])
    await other.sync()
    with pytest.raises(SessionEnded):
        other.check(claims)
    now[0] += settings.session_stale_s + 1
    with pytest.raises(SessionStateUnknown):
        sessions.check(dataclasses.replace(claims, session_id=uuid.uuid4()))


async def test_readiness_refreshes_a_stale_mirror_so_requests_pass_again(
    client: httpx.AsyncClient, app: Any
) -> None:
    """After PostgreSQL was away longer than SESSION_STALE_S, signed-in requests are 503 until
    a poll succeeds. /readyz, which a balancer asks before it sends traffic back, polls itself:
    once it says 200, the requests pass (before, they could fail for up to SESSION_SYNC_S)."""
    account = await signup(client)
    sessions = app.state.auth.sessions
    sessions._synced_at = time.monotonic() - 3600  # the last confirmed poll: long ago
    assert_error(await client.get("/api/v1/users/me", headers=account.headers), 503, "unavailable")
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["dependencies"]["database"] == {"status": "ok"}
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 200


async def test_the_check_costs_no_database_read(client: httpx.AsyncClient, app: Any) -> None:
    """A signed-in read route runs its own query only: counted on the engine."""
    from sqlalchemy import event

    account = await signup(client)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        r = await client.get(f"/api/v1/users/{account.id}", headers=account.headers)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert r.status_code == 200
    assert not any("session_revocations" in s for s in statements), statements
    assert len([s for s in statements if "FROM users" in s]) <= 1, statements


# Sockets on one instance -----------------------------------------------------------------------


async def test_logout_closes_the_sessions_sockets_4401(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    account = await signup(http)
    other = await _second_session(http, account)
    ticket = (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()
    late_ticket = (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()
    async with (
        ws_connect(live.ws_url, account.access_token) as by_header,
        ws_connect(f"{live.ws_url}?ticket={ticket['ticket']}") as by_ticket,
        ws_connect(live.ws_url, other.access_token) as other_ws,
    ):
        for ws in (by_header, by_ticket, other_ws):
            await ws.expect("welcome")
        r = await http.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
        assert r.status_code == 204
        assert await closed_with(by_header) == 4401
        assert await closed_with(by_ticket) == 4401
        assert (await other_ws.request({"op": "ping", "id": 1}))["type"] == "pong"
    # A ticket minted before the logout is refused now.
    from tests.channels.test_gateway_auth import _refused

    status, body = await _refused(f"{live.ws_url}?ticket={late_ticket['ticket']}")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _ = await _refused(live.ws_url, account.access_token)
    assert status == 401


async def test_a_socket_auth_ed_with_a_session_closes_when_it_ends(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    account = await signup(http)
    second = await _second_session(http, account)
    async with ws_connect(live.ws_url, account.access_token) as ws:
        await ws.expect("welcome")
        authed = await ws.request({"op": "auth", "token": second.access_token, "id": "a"})
        assert authed["type"] == "authed"
        await http.post("/api/v1/auth/logout", json={"refresh_token": second.refresh_token})
        assert await closed_with(ws) == 4401


async def test_auth_op_with_an_ended_session_is_refused(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    account = await signup(http)
    second = await _second_session(http, account)
    await http.post("/api/v1/auth/logout", json={"refresh_token": second.refresh_token})
    async with ws_connect(live.ws_url, account.access_token) as ws:
        await ws.expect("welcome")
        refused = await ws.request({"op": "auth", "token": second.access_token, "id": 2})
        assert refused["type"] == "error" and refused["code"] == "unauthorized"
        assert (await ws.request({"op": "ping"}))["type"] == "pong"


async def test_password_change_closes_every_socket(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    account = await signup(http)
    other = await _second_session(http, account)
    async with (
        ws_connect(live.ws_url, account.access_token) as a,
        ws_connect(live.ws_url, other.access_token) as b,
    ):
        await a.expect("welcome")
        await b.expect("welcome")
        r = await http.post(
            "/api/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.headers,
        )
        assert r.status_code == 204
        assert await closed_with(a) == 4401
        assert await closed_with(b) == 4401


# Account deletion ---------------------------------------------------------------------------


async def _ride(http: httpx.AsyncClient, driver: Account, **fields: Any) -> dict[str, Any]:
    body = {
        "origin": "Innopolis",
        "destination": "Kazan",
        "departure_at": (datetime.now(UTC) + timedelta(hours=5)).isoformat(),
        "seats_total": 3,
        "instant_booking": True,
    } | fields
    r = await http.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    ride: dict[str, Any] = r.json()
    return ride


async def test_deleting_the_account(live: LiveServer, http: httpx.AsyncClient) -> None:
    driver = await signup(http, display_name="Dina Driver", phone="+7 900 111-22-33")
    passenger = await signup(http)
    ride = await _ride(http, driver)
    theirs = await _ride(http, passenger)
    booked = await http.post(
        f"/api/v1/rides/{ride['id']}/bookings", json={"seats": 1}, headers=passenger.headers
    )
    assert booked.status_code == 201
    mine = await http.post(
        f"/api/v1/rides/{theirs['id']}/bookings", json={"seats": 2}, headers=driver.headers
    )
    assert mine.json()["status"] == "confirmed"
    async with (
        ws_connect(live.ws_url, driver.access_token) as driver_ws,
        ws_connect(live.ws_url, passenger.access_token) as watcher,
    ):
        await driver_ws.expect("welcome")
        await watcher.expect("welcome")
        sub = await watcher.request({"op": "subscribe", "channel": f"ride:{ride['id']}"})
        assert sub["type"] == "subscribed"
        wrong = await http.request(
            "DELETE", "/api/v1/users/me", json={"password": "nope-nope"}, headers=driver.headers
        )
        assert_error(wrong, 403, "forbidden")
        r = await http.request(
            "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=driver.headers
        )
        assert r.status_code == 204
        assert await closed_with(driver_ws) == 4401
        events = []
        while not any(e.get("event") == "ride.cancelled" for e in events):
            events.append(await watcher.recv())
        cancelled = next(e for e in events if e.get("event") == "ride.cancelled")
        assert cancelled["data"]["status"] == "cancelled"
    assert_error(await _me(http, driver), 401, "unauthorized")
    assert_error(await login(http, driver.email), 401, "unauthorized")
    profile = (await http.get(f"/api/v1/users/{driver.id}", headers=passenger.headers)).json()
    assert profile["display_name"] != "Dina Driver"
    got = await http.get(f"/api/v1/rides/{ride['id']}", headers=passenger.headers)
    assert got.json()["status"] == "cancelled"
    assert "Dina" not in got.text
    notes = (await http.get("/api/v1/notifications", headers=passenger.headers)).json()["items"]
    assert any(n["kind"] == "ride.cancelled" for n in notes)
    # The deleted user's booking on someone else's ride is cancelled: the seats are back.
    seats = await http.get(f"/api/v1/rides/{theirs['id']}", headers=passenger.headers)
    assert seats.json()["seats_available"] == 3
    # Nothing of theirs is left: the email can register again.
    again = await http.post(
        "/api/v1/auth/register",
        json={"email": driver.email, "password": PASSWORD, "display_name": "New"},
    )
    assert again.status_code == 201


async def test_deleted_account_row_holds_no_personal_data(
    client: httpx.AsyncClient, app: Any
) -> None:
    from models import User

    account = await signup(client, display_name="Secret Name", phone="+7 900 000-00-01")
    r = await client.request(
        "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=account.headers
    )
    assert r.status_code == 204
    async with app.state.sessionmaker() as session:
        user = await session.get(User, account.id)
    assert user is not None and user.deleted_at is not None
    assert account.email not in user.email and user.phone is None
    assert "Secret" not in user.display_name and user.bio is None
