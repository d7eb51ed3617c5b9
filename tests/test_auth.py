from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from jose import jwt

from tests.conftest import JWT_SECRET
from tests.helpers import PASSWORD, assert_error, login, new_email, register, signup


async def test_register_returns_private_profile(client: httpx.AsyncClient) -> None:
    email = new_email()
    r = await register(client, email, phone="+7 900 000-00-00")
    assert r.status_code == 201
    user = r.json()
    assert user["email"] == email and user["phone"] == "+7 900 000-00-00"
    assert user["display_name"] == "Rider" and user["rating_count"] == 0
    assert "password" not in r.text and "password_hash" not in user


async def test_duplicate_email_is_conflict_case_insensitively(client: httpx.AsyncClient) -> None:
    email = new_email()
    assert (await register(client, email)).status_code == 201
    assert_error(await register(client, email.upper()), 409, "conflict")


async def test_concurrent_duplicate_registration_creates_one_account(
    client: httpx.AsyncClient,
) -> None:
    email = new_email()
    results = await asyncio.gather(*(register(client, email) for _ in range(5)))
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409, 409]


async def test_weak_password_and_bad_email_list_the_fields(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": "not-an-email", "password": "short", "display_name": ""},
    )
    error = assert_error(r, 422, "validation_error")
    fields = {d["field"] for d in error["details"]}
    assert fields == {"body.email", "body.password", "body.display_name"}


async def test_login_wrong_password_and_unknown_email(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    assert_error(await login(client, account.email, "wrong-password"), 401, "unauthorized")
    assert_error(await login(client, new_email()), 401, "unauthorized")


async def test_token_pair_shape_and_claims(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    r = await login(client, account.email.upper())
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    claims = jwt.get_unverified_claims(body["access_token"])
    assert set(claims) == {"sub", "exp", "iat", "jti", "typ", "sid"}
    assert claims["typ"] == "access" and claims["sub"] == str(account.id)
    refresh = jwt.get_unverified_claims(body["refresh_token"])
    assert refresh["typ"] == "refresh"
    # `sid` is the refresh-token family: the first refresh token's id, kept on rotation.
    assert claims["sid"] == refresh["jti"]
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert jwt.get_unverified_claims(r.json()["access_token"])["sid"] == claims["sid"]


async def test_refresh_rotates_and_old_token_stops_working(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert r.status_code == 200
    fresh = r.json()
    assert fresh["refresh_token"] != account.refresh_token
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}
    )
    assert me.status_code == 200
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert_error(again, 401, "unauthorized")


async def test_refresh_reuse_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    first = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    rotated = first.json()["refresh_token"]
    # An attacker replays the stolen, already-rotated token...
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert_error(replay, 401, "unauthorized")
    # ...so the legitimate holder's newer token is dead too: the family is revoked.
    victim = await client.post("/api/v1/auth/refresh", json={"refresh_token": rotated})
    assert_error(victim, 401, "unauthorized")
    # Another login (another family) is unaffected.
    other = await login(client, account.email)
    ok = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other.json()["refresh_token"]}
    )
    assert ok.status_code == 200


async def test_concurrent_refresh_with_one_token_yields_one_pair(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    results = await asyncio.gather(
        *(
            client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in results) == [200, 401, 401, 401]


async def test_logout_revokes_refresh_token(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert r.status_code == 204 and r.content == b""
    after = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert_error(after, 401, "unauthorized")


async def test_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    r = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {account.refresh_token}"}
    )
    assert_error(r, 401, "unauthorized")
    swapped = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": account.access_token}
    )
    assert_error(swapped, 401, "unauthorized")


def _forge(claims: dict[str, object], key: str = JWT_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _claims(user_id: int, **over: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": str(uuid.uuid4()),
        "typ": "access",
    }
    claims.update(over)
    return claims


async def test_forged_and_expired_access_tokens_are_refused(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    unsigned = jwt.encode(_claims(account.id), "", algorithm="HS256").rsplit(".", 1)[0]
    header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    bad_tokens = {
        "wrong key": _forge(_claims(account.id), key="another-key-" + "x" * 40),
        "expired": _forge(_claims(account.id, exp=past)),
        "alg none": header_none + "." + unsigned.split(".", 1)[1] + ".",
        "other alg": _forge(_claims(account.id), alg="HS512"),
        "garbage": "not.a.jwt",
        "no typ": _forge({k: v for k, v in _claims(account.id).items() if k != "typ"}),
    }
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 200
    for label, token in bad_tokens.items():
        r = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, label
        assert r.json()["error"]["code"] == "unauthorized", label
    expired = await client.get(
        "/api/v1/users/me",
        headers={"Authorization": f"Bearer {bad_tokens['expired']}"},
    )
    assert "expired" in expired.json()["error"]["message"].lower()


async def test_missing_bearer_is_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/users/me")
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_ws_ticket_is_short_lived(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    r = await client.post("/api/v1/auth/ws-ticket", headers=account.headers)
    assert r.status_code == 200
    body = r.json()
    assert 0 < body["expires_in"] <= 60 and len(body["ticket"]) >= 32
    assert_error(await client.post("/api/v1/auth/ws-ticket"), 401, "unauthorized")


async def test_login_form_validation(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/token", data={"username": "a@b.c"})
    error = assert_error(r, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["body.password"]


async def test_password_is_checked_not_just_email(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    assert (await login(client, account.email, PASSWORD + "x")).status_code == 401
