"""An app served by a real uvicorn (with Kuda's WebSocket protocol) inside the test's loop,
and a small WebSocket client for tests."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from channels.transport import KudaWebSocketProtocol
from server.app import KudaASGI, create_app
from server.config import Settings
from tests.procs import free_port


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> LiveServer:
        config = uvicorn.Config(
            KudaASGI(self.app),
            host="127.0.0.1",
            port=self.port,
            ws=KudaWebSocketProtocol,
            ws_max_size=self.settings.ws_max_frame_bytes,
            ws_ping_interval=self.settings.heartbeat_s,
            ws_ping_timeout=self.settings.heartbeat_s,
            ws_per_message_deflate=False,
            log_level="warning",
            lifespan="on",
        )
        self._server = server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise TimeoutError("uvicorn did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 20)

    @property
    def sessionmaker(self) -> Any:
        return self.app.state.sessionmaker


class WsClient:
    """JSON frames over a websockets client connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.conn.send(orjson.dumps(frame).decode())
        else:
            await self.conn.send(frame)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        value: dict[str, Any] = orjson.loads(raw)
        return value

    async def expect(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == type_, frame
        return frame

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        await self.send(frame)
        return await self.recv(timeout)

    async def events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            frame = await self.recv(timeout)
            assert frame["type"] == "event", frame
            out.append(frame)
        return out

    async def silent(self, seconds: float = 0.3) -> bool:
        """True when nothing arrives for `seconds`."""
        try:
            frame = await asyncio.wait_for(self.conn.recv(), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame {frame!r}")

    async def close(self) -> None:
        await self.conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def ws_connect(url: str, token: str | None = None, **kw: Any) -> Any:
    headers = kw.pop("additional_headers", {})
    if token is not None:
        headers.update(bearer(token))
    async with connect(url, additional_headers=headers, open_timeout=10, **kw) as conn:
        yield WsClient(conn)
