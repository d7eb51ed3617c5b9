"""uvicorn's sans-I/O WebSocket protocol with a raw-frame writer for the fan-out fast path.

The app finds a `RawWriter` at `scope["extensions"]["kuda.raw_writer"]`. It writes a frame
built once (`channels.protocol.ws_text_frame`) straight to the transport after checking the
connection state and its write buffer: no `await`, no per-socket encoding. It relies on
uvicorn internals (`WebSocketsSansIOProtocol`): uvicorn is pinned (<0.55) and
tests/channels/test_transport.py checks the attributes it uses.
"""

from __future__ import annotations

import asyncio
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


class KudaWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds the raw writer extension and a synchronous close (for overflow and expiry)."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and not self.config.ws_per_message_deflate:
            scope["extensions"][EXTENSION] = RawWriter(self)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The handshake is done: drop what only it needed (a few KiB per idle socket).
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]

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
