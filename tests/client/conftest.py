"""Helpers for the Python client's tests: accounts, token functions, events appended directly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from channels import append
from kuda.client import Frame, Subscription
from tests.helpers import PASSWORD, Account, signup
from tests.live import LiveServer


async def account_on(base_url: str) -> Account:
    async with httpx.AsyncClient(base_url=base_url) as http:
        return await signup(http)


def login_token(base_url: str, account: Account) -> Callable[[], Awaitable[str]]:
    """A `get_token` that logs in again on each call (a fresh access token every time)."""

    async def get_token() -> str:
        async with httpx.AsyncClient(base_url=base_url) as http:
            r = await http.post(
                "/api/v1/auth/token", data={"username": account.email, "password": PASSWORD}
            )
            r.raise_for_status()
            return str(r.json()["access_token"])

    return get_token


async def append_events(live: LiveServer, channel: str, start: int, n: int) -> None:
    """Append `n` durable test events (data `{"i": start..}`) through the app's own sessions."""
    async with live.sessionmaker() as session:
        for i in range(start, start + n):
            await append(session, channel, "test.event", {"i": i})
        await session.commit()


async def take(sub: Subscription, n: int, timeout: float = 30) -> list[Frame]:
    """The next `n` frames of `sub` (fails after a generous deadline)."""
    out: list[Frame] = []
    async with asyncio.timeout(timeout):
        async for frame in sub:
            out.append(frame)
            if len(out) == n:
                break
    return out


@pytest.fixture
async def account(live: LiveServer) -> Account:
    return await account_on(live.http)


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["seq"]) for f in frames]
