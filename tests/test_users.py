from __future__ import annotations

import httpx

from tests.helpers import assert_error, signup


async def test_me_get_and_patch(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    me = await client.get("/api/v1/users/me", headers=account.headers)
    assert me.json()["email"] == account.email
    r = await client.patch(
        "/api/v1/users/me",
        headers=account.headers,
        json={"display_name": "Aigul", "bio": "Innopolis -> Kazan daily", "phone": "+79000000001"},
    )
    assert r.status_code == 200
    assert r.json()["display_name"] == "Aigul" and r.json()["phone"] == "+79000000001"
    again = await client.get("/api/v1/users/me", headers=account.headers)
    assert again.json()["bio"] == "Innopolis -> Kazan daily"


async def test_patch_me_refuses_bad_fields(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    for body, field in [
        ({"display_name": ""}, "body.display_name"),
        ({"display_name": None}, "body.display_name"),
        ({"bio": "x" * 1001}, "body.bio"),
        ({"phone": "call me"}, "body.phone"),
        ({"is_admin": True}, "body.is_admin"),
    ]:
        r = await client.patch("/api/v1/users/me", headers=account.headers, json=body)
        error = assert_error(r, 422, "validation_error")
        assert [d["field"] for d in error["details"]] == [field], body
    me = (await client.get("/api/v1/users/me", headers=account.headers)).json()
    assert me["is_admin"] is False and me["display_name"] == "Rider"


async def test_public_profile_hides_private_data(client: httpx.AsyncClient) -> None:
    alice = await signup(client, phone="+79001112233")
    bob = await signup(client)
    r = await client.get(f"/api/v1/users/{alice.id}", headers=bob.headers)
    assert r.status_code == 200
    assert set(r.json()) == {
        "id",
        "display_name",
        "bio",
        "is_verified",
        "rating_avg",
        "rating_count",
    }
    assert alice.email not in r.text and "+79001112233" not in r.text


async def test_public_profile_needs_auth_and_existing_user(client: httpx.AsyncClient) -> None:
    bob = await signup(client)
    assert_error(await client.get(f"/api/v1/users/{bob.id}"), 401, "unauthorized")
    assert_error(await client.get("/api/v1/users/999999", headers=bob.headers), 404, "not_found")
    assert_error(
        await client.get("/api/v1/users/abc", headers=bob.headers), 422, "validation_error"
    )
