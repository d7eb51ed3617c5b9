"""One socket: its identity, subscriptions, op rate limit, expiry and bounded writer.

Writes never block the caller. On the fast path (`RawWriter`) the bound is the transport's
write buffer: past `max_buffer_bytes` the socket is closed 4429 and nobody else waits for it.
Without the raw writer (another ASGI server), frames go through a bounded queue drained by the
socket's own writer task, with the same overflow rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket

from channels.codes import CloseCode
from channels.hub import OutFrame, Subscription
from channels.metrics import Tallies
from channels.protocol import encode, unsubscribed
from channels.transport import EXTENSION, RawWriter
from channels.types import Identity

PACE_POLL_S = 0.005
"""How often a paced write (`Connection.push_paced`) looks at the backlog while it waits."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_buffer_bytes: int = 1024 * 1024
    max_queue_frames: int = 1000
    ops_per_s: float = 20.0
    ops_burst: int = 40
    abuse_after: int = 20  # refused ops in a row before the socket is closed


class Connection:
    __slots__ = (
        "_abuse",
        "_expiry",
        "_last",
        "_limits",
        "_max_buffer",
        "_queue",
        "_raw",
        "_tallies",
        "_tokens",
        "_transport",
        "_wake",
        "_writer",
        "closed",
        "id",
        "identity",
        "on_revoked",
        "sessions",
        "subs",
        "user_id",
        "websocket",
    )

    def __init__(
        self, websocket: WebSocket, identity: Identity, limits: Limits, tallies: Tallies
    ) -> None:
        self.id = uuid.uuid4().hex
        self.websocket = websocket
        self.identity = identity
        self.user_id = identity.user_id
        self.subs: dict[str, Subscription] = {}
        self.sessions: tuple[str, ...] = ()  # session ids of the credentials it used
        self.on_revoked: Callable[[str], None] | None = None
        self.closed = False
        self._limits = limits
        self._tallies = tallies
        extensions: dict[str, Any] = websocket.scope.get("extensions") or {}
        self._raw: RawWriter | None = extensions.get(EXTENSION)
        self._transport = self._raw.transport if self._raw is not None else None
        self._max_buffer = limits.max_buffer_bytes
        self._queue: deque[bytes] | None = None
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._tokens = float(limits.ops_burst)
        self._last = asyncio.get_running_loop().time()
        self._abuse = 0
        self._expiry: asyncio.TimerHandle | None = None

    # Writing ------------------------------------------------------------------------------

    def push(self, frame: OutFrame) -> None:
        """The fan-out hot path: one check of the transport, then a write of prebuilt bytes."""
        transport = self._transport
        if transport is not None:
            if self.closed or transport.is_closing():
                return
            if transport.get_write_buffer_size() > self._max_buffer:
                self._overflow()
                return
            transport.write(frame.ws)
        elif frame.parts is None:
            self._enqueue(frame.payload)
        else:
            for payload in frame.parts:
                self._enqueue(payload)
        self._tallies.frames_out += frame.count

    async def push_paced(
        self, frames: Sequence[OutFrame], stall_s: float, stop: Callable[[], bool]
    ) -> int:
        """Write `frames` in order without ever going over the write bound: past half of it,
        wait until the peer has read the backlog down to a quarter. A replay (up to 1,000
        events, each up to a frame's size) is often larger than the bound; written at once it
        would close the socket 4429 on every resubscribe. A peer that reads nothing for
        `stall_s` is too slow (4429). Stops early when the socket closes or `stop()` says so.
        Returns how many frames were written."""
        high, low = self._pace_marks()
        written = 0
        for frame in frames:
            if self.closed or stop():
                break
            if self._backlog() > high and not await self._drained(low, stall_s, stop):
                if not self.closed and not stop():
                    self._overflow()  # stalled: too slow
                break
            if self.closed or stop():
                break
            self.push(frame)
            written += 1
        return written

    def _pace_marks(self) -> tuple[int, int]:
        if self._transport is not None:
            return self._max_buffer // 2, self._max_buffer // 4
        frames = self._limits.max_queue_frames
        return frames // 2, frames // 4

    def _backlog(self) -> int:
        """What is written but not yet taken by the peer: bytes in the transport's buffer, or
        frames in the queue."""
        if self._transport is not None:
            return int(self._transport.get_write_buffer_size())
        return len(self._queue) if self._queue is not None else 0

    async def _drained(self, low: int, stall_s: float, stop: Callable[[], bool]) -> bool:
        """Wait until the backlog is at most `low`; False if the socket closed, `stop()` said
        so, or the backlog did not shrink for `stall_s`."""
        loop = asyncio.get_running_loop()
        backlog = self._backlog()
        deadline = loop.time() + stall_s
        while backlog > low:
            transport = self._transport
            if self.closed or (transport is not None and transport.is_closing()) or stop():
                return False
            if loop.time() > deadline:
                return False
            await asyncio.sleep(PACE_POLL_S)
            now = self._backlog()
            if now < backlog:
                deadline = loop.time() + stall_s  # the peer is reading: keep waiting
            backlog = now
        return not self.closed

    def send(self, frame: dict[str, Any]) -> None:
        self.push(OutFrame(encode(frame)))

    def revoked(self, channel: str) -> None:
        self.subs.pop(channel, None)
        self.send(unsubscribed(channel, "forbidden"))
        if self.on_revoked is not None:
            self.on_revoked(channel)

    def too_slow(self) -> None:
        """Close 4429: the peer does not take what it is sent fast enough."""
        if not self.closed:
            self._overflow()

    def _overflow(self) -> None:
        self._tallies.overflows += 1
        self.close(CloseCode.RATE_LIMITED, "too slow")

    def _enqueue(self, payload: bytes) -> None:
        if self.closed:
            return
        if self._queue is None:
            self._queue, self._wake = deque(), asyncio.Event()
            self._writer = asyncio.create_task(self._write_loop())
        if len(self._queue) >= self._limits.max_queue_frames:
            self._overflow()
            return
        self._queue.append(payload)
        assert self._wake is not None
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self._queue is not None and self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                payload = self._queue.popleft()
                await self.websocket.send({"type": "websocket.send", "text": payload.decode()})

    # Lifecycle ----------------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Start closing; the receive loop then sees the disconnect and cleans up."""
        if self.closed:
            return
        self.closed = True
        if self._raw is not None:
            self._raw.close(code, reason)
        else:
            if self._writer is not None:
                self._writer.cancel()
            self._writer = asyncio.ensure_future(self._close_queued(code, reason))

    async def _close_queued(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)

    def expire_at(self, identity: Identity) -> None:
        """(Re)arm the close-on-expiry timer for the socket's credential."""
        self.identity = identity
        if self._expiry is not None:
            self._expiry.cancel()
        delay = identity.expires_at.timestamp() - time.time()
        self._expiry = asyncio.get_running_loop().call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def allow_op(self) -> bool:
        """Token bucket; False means refuse this op (and maybe close: see `abusive`)."""
        now = asyncio.get_running_loop().time()
        limits = self._limits
        self._tokens = min(
            float(limits.ops_burst), self._tokens + (now - self._last) * limits.ops_per_s
        )
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._abuse = 0
            return True
        self._abuse += 1
        return False

    @property
    def abusive(self) -> bool:
        return self._abuse >= self._limits.abuse_after

    def shutdown(self) -> None:
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self._writer is not None:
            self._writer.cancel()
