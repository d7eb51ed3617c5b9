"""JWT_SECRET rotation without logging anyone out: tokens carry a key id (`kid`), are signed
with JWT_SECRET and verified with it or any JWT_ACCEPTED_SECRETS, across the three steps of a
rotation (accept the new key, sign with it, drop the old one)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager
from jose import jwt

from server.app import create_app
from server.auth.tokens import InvalidToken, TokenCodec, key_id
from server.config import ConfigError, Settings
from tests.helpers import signup

OLD = "old-secret-" + "o" * 40
NEW = "new-secret-" + "n" * 40


def codec(settings_factory: Callable[..., Settings], secret: str, *accepted: str) -> TokenCodec:
    return TokenCodec(settings_factory(jwt_secret=secret, jwt_accepted_secrets=",".join(accepted)))


def test_tokens_carry_the_signing_keys_id(settings_factory: Callable[..., Settings]) -> None:
    token = codec(settings_factory, OLD).issue(7, "access").token
    assert jwt.get_unverified_header(token)["kid"] == key_id(OLD)
    assert OLD not in key_id(OLD)


def test_a_rotation_in_three_steps_keeps_every_token_valid(
    settings_factory: Callable[..., Settings],
) -> None:
    before = codec(settings_factory, OLD)
    old_token = before.issue(7, "refresh").token
    # 1. Every instance accepts the new key (still signing with the old one).
    step1 = codec(settings_factory, OLD, NEW)
    # 2. Every instance signs with the new key and accepts the old one.
    step2 = codec(settings_factory, NEW, OLD)
    new_token = step2.issue(7, "refresh").token
    for c in (before, step1, step2):
        assert c.decode(old_token, "refresh").user_id == 7
    for c in (step1, step2):  # an instance not yet at step 2 accepts tokens signed at step 2
        assert c.decode(new_token, "refresh").user_id == 7
    # 3. After the refresh-token lifetime the old key is dropped: its tokens stop working.
    step3 = codec(settings_factory, NEW)
    assert step3.decode(new_token, "refresh").user_id == 7
    with pytest.raises(InvalidToken, match="no longer accepted"):
        step3.decode(old_token, "refresh")


def test_a_token_without_kid_is_verified_with_the_current_key(
    settings_factory: Callable[..., Settings],
) -> None:
    legacy = jwt.encode(
        {"sub": "7", "iat": 1, "exp": 4102444800, "jti": "6c2d4b7e-0d7e-4a55-9c33-6f0d3c1f8c11",
         "typ": "access"},
        OLD, algorithm="HS256",
    )  # fmt: skip
    assert codec(settings_factory, OLD).decode(legacy, "access").user_id == 7
    with pytest.raises(InvalidToken):
        codec(settings_factory, NEW, OLD).decode(legacy, "access")


def test_a_weak_accepted_secret_is_refused(settings_factory: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="JWT_ACCEPTED_SECRETS"):
        codec(settings_factory, NEW, "short")


async def test_users_stay_logged_in_across_a_rotation(
    settings_factory: Callable[..., Settings],
) -> None:
    async def client(settings: Settings) -> tuple[LifespanManager, httpx.AsyncClient]:
        app = create_app(settings)
        manager = LifespanManager(app)
        await manager.__aenter__()
        transport = httpx.ASGITransport(app=app)
        return manager, httpx.AsyncClient(transport=transport, base_url="http://kuda.test")

    manager, old = await client(settings_factory(jwt_secret=OLD))
    async with old:
        account = await signup(old)
    await manager.__aexit__(None, None, None)
    manager, new = await client(settings_factory(jwt_secret=NEW, jwt_accepted_secrets=OLD))
    try:
        async with new:
            me = await new.get("/api/v1/users/me", headers=account.headers)
            assert me.status_code == 200, me.text
            refreshed = await new.post(
                "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
            )
            assert refreshed.status_code == 200, refreshed.text
            fresh = refreshed.json()["access_token"]
            assert jwt.get_unverified_header(fresh)["kid"] == key_id(NEW)
    finally:
        await manager.__aexit__(None, None, None)
