"""uvicorn's sans-I/O WebSocket protocol with a raw-frame writer for the fan-out fast path.

The app finds a `RawWriter` at `scope["extensions"]["kuda.raw_writer"]`. It writes a frame
built once (`channels.protocol.ws_text_frame`) straight to the transport after checking the
connection state and its write buffer: no `await`, no per-socket encoding. It relies on
uvicorn internals (`WebSocketsSansIOProtocol`): uvicorn is pinned (<0.55) and
tests/channels/test_transport.py checks the attributes it uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

EXTENSION = "kuda.raw_writer"
CLOSE_TIMEOUT_S = 5.0


class RawWriter:
    __slots__ = ("_proto", "transport")

    def __init__(self, proto: KudaWebSocketProtocol) -> None:
        self._proto = proto
        # Every way uvicorn ends a connection after the handshake (peer close, keepalive
        # timeout, shutdown, parser error, lost connection) closes this transport, so
        # `transport.is_closing()` plus the connection's own `closed` flag is the fast-path
        # check for "may still write".
        self.transport: asyncio.Transport = proto.transport

    def close(self, code: int, reason: str = "") -> None:
        self._proto.close_now(code, reason)


class Inbox:
    """What uvicorn's protocol uses of its `asyncio.Queue` (`put_nowait`, `get`, `empty`) for
    a single reader, the socket's ASGI task. An idle socket holds no deque and no future: an
    `asyncio.Queue` allocates four deques and an Event up front (~2.5 KiB per socket)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class Flag:
    """`asyncio.Event` as uvicorn's protocol uses it for `writable`, without a deque per
    socket until someone actually waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class KudaWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds the raw writer extension and a synchronous close (for overflow and expiry), and
    keeps less per idle socket (docs/decisions.md D16, D32)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and not self.config.ws_per_message_deflate:
            scope["extensions"][EXTENSION] = RawWriter(self)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The handshake is done: drop what only it needed (a few KiB per idle socket).
            # websockets' parser generator keeps the parsed request as a local for the life of
            # the connection: empty its headers in place (the app copied what it needs).
            if self.request is not None:
                self.request.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # A refusal (401, 403, 429, 503) was sent as a denial response: the handshake is
            # over. uvicorn's sans-I/O protocol does not count it so, and logged "ASGI callable
            # returned without completing handshake" at ERROR for every refused handshake.
            self.handshake_complete = True

    def close_now(self, code: int, reason: str = "") -> None:
        """Send a close frame now and end the connection even if the peer never reads: a
        socket that stopped reading is aborted after CLOSE_TIMEOUT_S."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)
