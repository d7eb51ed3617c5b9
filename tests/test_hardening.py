"""Hardening (issue 8 item 7): display names people can trust, credentials kept out of logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.cluster import Cluster
from tests.helpers import assert_error, register, signup
from tests.live import ws_connect
from tests.services import REDIS_URL


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  Aigul  ", "Aigul"),
        ("\uff21\uff49\uff47\uff55\uff4c", "Aigul"),  # fullwidth letters, NFKC
        ("E\u0301mile", "\u00c9mile"),  # E + combining acute becomes one character
        ("👩\u200d👩\u200d👧", "👩\u200d👩\u200d👧"),  # emoji joined by ZWJ stay
    ],
)
async def test_display_names_are_normalised(
    client: httpx.AsyncClient, raw: str, stored: str
) -> None:
    r = await register(client, display_name=raw)
    assert r.status_code == 201, r.text
    assert r.json()["display_name"] == stored
    account = await signup(client)
    patched = await client.patch(
        "/api/v1/users/me", json={"display_name": raw}, headers=account.headers
    )
    assert patched.json()["display_name"] == stored


@pytest.mark.parametrize(
    "raw",
    [
        "   ",
        "\u3000",  # ideographic space only
        "evil\u202egnp.exe",  # right-to-left override
        "name\u2066x\u2069",  # isolates
        "a\u200fb",  # right-to-left mark
        "line\nbreak",
        "tab\there",
        "bell\x07",
        "zero\u200bwidth",
        "para\u2029graph",
        "x" * 81,
    ],
)
async def test_display_names_blank_or_with_controls_are_refused(
    client: httpx.AsyncClient, raw: str
) -> None:
    error = assert_error(await register(client, display_name=raw), 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["body.display_name"]
    account = await signup(client)
    patched = await client.patch(
        "/api/v1/users/me", json={"display_name": raw}, headers=account.headers
    )
    error = assert_error(patched, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["body.display_name"]


@pytest.mark.slow
async def test_credentials_in_urls_are_never_logged(
    cluster_factory: Callable[[str], Cluster], redis: Any, tmp_path: Path
) -> None:
    cluster = cluster_factory(REDIS_URL)
    server = await cluster.process("logs", LOG_LEVEL="info")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        account = await signup(http)
        ticket = (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()
        await http.get(f"/api/v1/rides?access_token={account.access_token}")
        await http.get(f"/healthz?token={account.refresh_token}&x=1")
    ws = f"ws://127.0.0.1:{server.port}/ws"
    with pytest.raises(InvalidStatus):
        async with ws_connect(f"{ws}?token={account.access_token}"):
            pass
    async with ws_connect(f"{ws}?ticket={ticket['ticket']}") as conn:
        await conn.expect("welcome")
    log = server.log()
    assert "/ws?token=[redacted]" in log and "access_token=[redacted]" in log
    for secret in (account.access_token, account.refresh_token, ticket["ticket"]):
        assert secret not in log
