"""Ended sessions: recorded in PostgreSQL, mirrored in the memory of every instance.

A session is a refresh-token family; its access tokens carry the family id as `sid`. Logout,
refresh-token reuse, a password change and account deletion end sessions before their access
tokens expire. Checking a token costs one dict lookup, no I/O (docs/decisions.md D26). The
mirror learns of an ended session:

- at once on the instance that ends it (after its transaction commits);
- through the broker on every other instance (`Realtime.end_sessions`, which also closes the
  sockets of those sessions with 4401 everywhere);
- by polling PostgreSQL every `SESSION_SYNC_S` (one indexed query per instance, not per
  request): the fallback when the broker is down or a message was lost.

When the mirror has not been confirmed against PostgreSQL for `SESSION_STALE_S`, nobody can say
whether a token's session ended elsewhere: checks then raise `SessionStateUnknown` (503), never
let the token through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import SessionRevocation
from server.auth.tokens import TokenClaims
from server.config import Settings
from server.db import on_commit
from server.errors import Unauthorized, Unavailable

log = logging.getLogger("kuda.sessions")

CLOCK_SLACK_S = 60
"""Kept past the access token lifetime, for clocks that disagree a little."""
POLL_OVERLAP_S = 30
"""Each poll re-reads this much before the newest row seen: a row inserted before a newer one
but committed after it is still found."""

Broadcast = Callable[[Sequence[str]], Awaitable[None]]
LocalEnd = Callable[[Sequence[str]], object]


class SessionEnded(Unauthorized):
    def __init__(self) -> None:
        super().__init__("This session has ended; sign in again")


class SessionStateUnknown(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "Sessions cannot be checked right now; try again shortly",
            headers={"Retry-After": "2"},
        )


def session_key(claims: TokenClaims) -> str:
    """The key a token's session is ended under: its `sid`, or `user:{id}` for tokens issued
    before tokens carried one (ended only when all of the user's sessions end)."""
    if claims.session_id is not None:
        return str(claims.session_id)
    return user_key(claims.user_id)


def user_key(user_id: int) -> str:
    return f"user:{user_id}"


class EndedSessions:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._keep_s = settings.access_token_ttl_s + CLOCK_SLACK_S
        self._sync_s = settings.session_sync_s
        self._stale_s = settings.session_stale_s
        self._clock = clock
        self._ended: dict[str, float] = {}  # key -> forget after (epoch seconds)
        self._synced_at: float | None = None  # clock() of the last confirmed poll
        self._watermark: datetime | None = None  # newest created_at seen (database clock)
        self._task: asyncio.Task[None] | None = None
        self.broadcast: Broadcast | None = None
        """Tells every instance (Realtime.end_sessions: closes sockets, updates mirrors)."""
        self.end_locally: LocalEnd | None = None
        """Closes this instance's sockets of sessions learnt by polling."""

    # The per-request check ----------------------------------------------------------------

    def check(self, claims: TokenClaims) -> None:
        """Raise SessionEnded or SessionStateUnknown; return if the token may be used."""
        self.check_key(session_key(claims))

    def check_key(self, key: str) -> None:
        if not self.fresh:
            raise SessionStateUnknown
        if self.is_ended(key):
            raise SessionEnded

    @property
    def fresh(self) -> bool:
        """Whether a poll confirmed the mirror within SESSION_STALE_S (checks may pass)."""
        synced = self._synced_at
        return synced is not None and self._clock() - synced <= self._stale_s

    def is_ended(self, key: str) -> bool:
        until = self._ended.get(key)
        return until is not None and until > time.time()

    @property
    def size(self) -> int:
        return len(self._ended)

    # Ending sessions ----------------------------------------------------------------------

    async def end(
        self, session: AsyncSession, keys: Sequence[str], user_id: int, reason: str
    ) -> None:
        """Record, in the caller's transaction, that these sessions ended; once it commits
        (through `server.db.commit`), every instance refuses them and closes their sockets."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        expires = datetime.now(UTC) + timedelta(seconds=self._keep_s)
        await session.execute(
            insert(SessionRevocation),
            [
                {"session_key": k, "user_id": user_id, "reason": reason, "expires_at": expires}
                for k in keys
            ],
        )

        async def announce() -> None:
            self.remember(keys)
            if self.broadcast is not None:
                await self.broadcast(keys)

        on_commit(session, announce)

    async def ended_in_database(self, session: AsyncSession, key: str) -> bool:
        """The authoritative check, for the rare paths that may read (refresh)."""
        stmt = select(SessionRevocation.id).where(SessionRevocation.session_key == key).limit(1)
        return (await session.execute(stmt)).first() is not None

    def remember(self, keys: Sequence[str], forget_at: float | None = None) -> list[str]:
        """Add keys to the mirror; returns those it did not know."""
        until = forget_at if forget_at is not None else time.time() + self._keep_s
        new = [k for k in keys if not self.is_ended(k)]
        for key in keys:
            self._ended[key] = max(until, self._ended.get(key, 0.0))
        return new

    # Keeping the mirror in step with PostgreSQL -------------------------------------------

    async def sync(self) -> None:
        """Read what was recorded since the last poll (everything unexpired the first time)."""
        async with self._sessionmaker() as session:
            if self._watermark is None:
                now = (await session.execute(text("SELECT now()"))).scalar_one()
                stmt = select(
                    SessionRevocation.session_key,
                    SessionRevocation.expires_at,
                    SessionRevocation.created_at,
                ).where(SessionRevocation.expires_at > now)
            else:
                now = None
                since = self._watermark - timedelta(seconds=POLL_OVERLAP_S)
                stmt = (
                    select(
                        SessionRevocation.session_key,
                        SessionRevocation.expires_at,
                        SessionRevocation.created_at,
                    )
                    .where(SessionRevocation.created_at > since)
                    .order_by(SessionRevocation.created_at)
                )
            rows = (await session.execute(stmt)).all()
        new: list[str] = []
        for key, expires_at, created_at in rows:
            new += self.remember([key], expires_at.timestamp())
            if self._watermark is None or created_at > self._watermark:
                self._watermark = created_at
        if self._watermark is None:
            self._watermark = now
        self._synced_at = self._clock()
        self._forget_expired()
        if new and self.end_locally is not None:
            self.end_locally(new)

    def _forget_expired(self) -> None:
        if len(self._ended) < 1024:
            return
        now = time.time()
        self._ended = {k: t for k, t in self._ended.items() if t > now}

    async def start(self) -> None:
        try:
            await self.sync()
        except Exception as exc:  # serve anyway: checks answer 503 until a poll succeeds
            log.warning("ended sessions not loaded yet: %s", exc)
        self._task = asyncio.create_task(self._run(), name="kuda-sessions-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self.sync()
            except Exception as exc:
                if not failing:
                    log.warning("ended sessions poll failed: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("ended sessions poll recovered")
                failing = False
