"""Access tokens: one `get_token` call in flight at a time, shared by every waiter."""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from datetime import datetime

from kuda.client.types import TokenFn


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    obtained_at: float  # wall clock, seconds


class TokenSource:
    def __init__(self, get_token: TokenFn) -> None:
        self._get_token = get_token
        self._inflight: asyncio.Future[Token] | None = None
        self.current: Token | None = None
        self.calls = 0

    async def fresh(self) -> Token:
        """A token from `get_token`; concurrent callers share one call. Raises what it raises."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._call())
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    async def _call(self) -> Token:
        self.calls += 1
        obtained_at = time.time()
        value = self._get_token()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise TypeError("get_token must return a non-empty string")
        token = Token(value, obtained_at)
        self.current = token
        return token

    def _done(self, future: asyncio.Future[Token]) -> None:
        self._inflight = None
        if not future.cancelled():
            future.exception()  # retrieved here so an unawaited failure is not logged


def parse_expiry(value: str) -> float:
    """An RFC 3339 `expires_at` as a POSIX timestamp."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def refresh_delay(token: Token, expires_at: float, ratio: float, now: float) -> float:
    """Seconds until the refresh point: `ratio` of the token's lifetime after it was obtained."""
    lifetime = max(expires_at - token.obtained_at, 0.0)
    return max(token.obtained_at + ratio * lifetime - now, 0.0)
