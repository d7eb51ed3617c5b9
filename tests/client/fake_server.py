"""A scripted WebSocket server for the client's state-machine tests: each connection runs the
next script, so a test decides exactly which frames and close codes the client sees."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WELCOME = {
    "type": "welcome",
    "connection_id": "fake",
    "user_id": 1,
    "protocol": 1,
    "heartbeat_s": 25,
    "expires_at": "2100-01-01T00:00:00Z",
}


@dataclass
class Peer:
    """One accepted connection, as the script sees it."""

    ws: ServerConnection
    token: str
    ops: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def op(self, name: str) -> dict[str, Any]:
        """The next op from the client, which must be `name`."""
        while True:
            frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
            self.ops.append(frame)
            if frame["op"] == name:
                return frame

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)


Script = Callable[[Peer], Awaitable[None]]


class FakeServer:
    def __init__(self, scripts: list[Script], refuse: list[int] | None = None) -> None:
        self.scripts = list(scripts)
        self.refuse = list(refuse or [])  # HTTP statuses for the next handshakes
        self.tokens: list[str] = []
        self.peers: list[Peer] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._request)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.tokens.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if self.refuse:
            status = HTTPStatus(self.refuse.pop(0))
            body = b'{"error": {"code": "unauthorized", "message": "no"}}'
            return Response(status.value, status.phrase, Headers(), body)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        peer = Peer(ws, self.tokens[-1])
        self.peers.append(peer)
        await peer.send(WELCOME)
        script = self.scripts.pop(0) if self.scripts else _idle
        await script(peer)
        await ws.wait_closed()


async def _idle(peer: Peer) -> None:
    await peer.ws.wait_closed()
