"""Verified access tokens are remembered per process (server/auth/tokens.py, docs/decisions.md
D38); what a client notices must not change: an expired token is refused even after it was
accepted, a tampered copy of an accepted token is refused, other token types are not served
from the cache."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from server.auth.tokens import InvalidToken, TokenCodec
from server.config import Settings

SECRET = "cache-secret-" + "c" * 40


def test_an_accepted_token_is_refused_once_it_expires(
    settings_factory: Callable[..., Settings],
) -> None:
    codec = TokenCodec(settings_factory(jwt_secret=SECRET, access_token_ttl_s=1))
    issued = codec.issue(7, "access")
    assert codec.decode(issued.token, "access") == issued.claims
    assert codec.decode(issued.token, "access") == issued.claims  # served from the cache
    while time.time() < issued.claims.expires_at.timestamp() + 1:
        time.sleep(0.2)
    with pytest.raises(InvalidToken, match="expired"):
        codec.decode(issued.token, "access")
    with pytest.raises(InvalidToken, match="expired"):
        codec.decode(issued.token, "access")


def test_a_tampered_copy_of_an_accepted_token_is_refused(
    settings_factory: Callable[..., Settings],
) -> None:
    codec = TokenCodec(settings_factory(jwt_secret=SECRET))
    token = codec.issue(7, "access").token
    assert codec.decode(token, "access").user_id == 7
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(InvalidToken):
        codec.decode(forged, "access")


def test_a_cached_access_token_is_still_not_a_refresh_token(
    settings_factory: Callable[..., Settings],
) -> None:
    codec = TokenCodec(settings_factory(jwt_secret=SECRET))
    token = codec.issue(7, "access").token
    assert codec.decode(token, "access").user_id == 7
    with pytest.raises(InvalidToken, match="refresh"):
        codec.decode(token, "refresh")
