"""The raw-frame writer relies on uvicorn internals (pinned <0.55): fail loudly if they move."""

from __future__ import annotations

import inspect

import httpx
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from channels.protocol import ws_text_frame
from channels.transport import EXTENSION, KudaWebSocketProtocol
from tests.helpers import signup
from tests.live import LiveServer, ws_connect


def test_uvicorn_protocol_still_has_what_the_fast_path_uses() -> None:
    init = inspect.getsource(WebSocketsSansIOProtocol.__init__)
    for attribute in (
        "self.transport",
        "self.queue",
        "self.close_sent",
        "self.disconnected",
        "self.read_paused",
        "self.close_timer",
        "self.conn",
        "self.handshake_complete",
    ):
        assert attribute in init, attribute
    connect = inspect.getsource(WebSocketsSansIOProtocol.handle_connect)
    assert '"extensions"' in connect and "self.scope" in connect
    assert issubclass(KudaWebSocketProtocol, WebSocketsSansIOProtocol)


async def test_sockets_get_the_raw_writer_and_frames_decode(live: LiveServer) -> None:
    seen: list[object] = []
    realtime = live.app.state.realtime
    original = realtime.gateway.endpoint

    async def spy(websocket: object) -> None:
        seen.append(websocket.scope["extensions"].get(EXTENSION))  # type: ignore[attr-defined]
        await original(websocket)

    realtime.gateway.endpoint = spy
    async with httpx.AsyncClient(base_url=live.http) as http:
        account = await signup(http)
    async with ws_connect(live.ws_url, account.access_token) as ws:
        assert (await ws.expect("welcome"))["user_id"] == account.id
    assert seen and seen[0] is not None
    assert ws_text_frame(b"hi") == b"\x81\x02hi"
