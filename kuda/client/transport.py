"""One WebSocket: the handshake and `welcome`, ops matched to their replies, frames in order.

Ops are paced by a token bucket below the server's per-socket rate, so a resubscription of
many channels after a reconnect is never refused as a flood."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kuda.client.types import Disconnected, Frame, KudaError, ServerError

USER_AGENT = "kuda-python-client/1"


class HandshakeRefused(KudaError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"handshake refused: HTTP {status} {body[:200]}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Closed:
    code: int  # 1006 when the connection was lost without a close frame
    reason: str


class Pacer:
    """A token bucket: `take()` waits until an op may go."""

    def __init__(self, per_s: float, burst: int) -> None:
        self._per_s, self._burst = per_s, float(burst)
        self._tokens, self._at = float(burst), time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_s)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._per_s)


def ws_url(base_url: str) -> str:
    """`http(s)://host[:port][/prefix]` -> `ws(s)://host[:port][/prefix]/ws`."""
    base = base_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http) :] + "/ws"
    raise ValueError(f"url must be an http:// or https:// base URL, got {base_url!r}")


class Transport:
    """A connected socket. `run()` reads until it closes and hands every frame, in order, to
    `on_frame` (replies too, before their waiter resumes)."""

    def __init__(self, ws: ClientConnection, welcome: Frame, pacer: Pacer) -> None:
        self.ws = ws
        self.welcome = welcome
        self._pacer = pacer
        self._ids = 0
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._order: collections.deque[int] = collections.deque()
        self.closed: Closed | None = None

    @classmethod
    async def open(
        cls, url: str, token: str, pacer: Pacer, open_s: float, ping_interval: float | None
    ) -> Transport:
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                user_agent_header=USER_AGENT,
                open_timeout=open_s,
                ping_interval=ping_interval,
                ping_timeout=ping_interval,
                max_size=16 * 1024 * 1024,
                compression=None,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode(errors="replace") if exc.response.body else ""
            raise HandshakeRefused(exc.response.status_code, body) from exc
        try:
            welcome: Frame = orjson.loads(await asyncio.wait_for(ws.recv(), open_s))
            if welcome.get("type") != "welcome":
                raise KudaError(f"expected welcome, got {welcome!r}")
        except BaseException:
            await ws.close()
            raise
        return cls(ws, welcome, pacer)

    async def request(self, op: dict[str, Any], reply_s: float) -> Frame:
        """Send `op` with a fresh id and wait for its reply. Raises `ServerError` for an error
        reply, `Disconnected` if the socket closes first, `TimeoutError` after `reply_s`."""
        self._ids += 1
        op_id = self._ids
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[op_id] = future
        try:
            await self._send({**op, "id": op_id}, op_id)
            async with asyncio.timeout(reply_s):
                return await future
        finally:
            self._forget(op_id)

    async def notify(self, op: dict[str, Any]) -> None:
        """Send an op that gets no reply when it succeeds (`typing`); its id keeps a refusal
        from being taken for another op's."""
        self._ids += 1
        await self._send({**op, "id": self._ids})

    async def _send(self, op: dict[str, Any], op_id: int | None = None) -> None:
        if self.closed is not None:
            raise Disconnected("socket closed")
        await self._pacer.take()
        if op_id is not None:
            self._order.append(op_id)
        try:
            await self.ws.send(orjson.dumps(op).decode())
        except ConnectionClosed as exc:
            raise Disconnected("socket closed") from exc

    def _forget(self, op_id: int) -> None:
        self._pending.pop(op_id, None)
        with contextlib.suppress(ValueError):
            self._order.remove(op_id)

    async def run(self, on_frame: Callable[[Frame], None]) -> Closed:
        try:
            while True:
                frame: Frame = orjson.loads(await self.ws.recv())
                on_frame(frame)
                self._reply(frame)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            self.closed = Closed(rcvd.code, rcvd.reason) if rcvd else Closed(1006, "")
        except BaseException:
            self.closed = Closed(1006, "client error")
            raise
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(Disconnected("socket closed before the reply"))
            self._pending.clear()
        return self.closed

    def _reply(self, frame: Frame) -> None:
        op_id = frame.get("id")
        if op_id is None and frame.get("code") == "rate_limited" and self._order:
            # Ops are handled in order and `rate_limited` carries no id: it refused the oldest
            # op still waiting (pacing keeps this rare).
            op_id = self._order[0]
        future = self._pending.get(op_id) if isinstance(op_id, int) else None
        if future is None or future.done():
            return
        if frame.get("type") == "error":
            future.set_exception(ServerError(str(frame.get("code")), str(frame.get("message"))))
        else:
            future.set_result(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)
