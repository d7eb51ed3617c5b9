"""The raw-frame writer relies on uvicorn internals (pinned <0.55): fail loudly if they move."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re

import httpx
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidStatus

from channels.protocol import ws_text_frame
from channels.transport import EXTENSION, Flag, Inbox, KudaWebSocketProtocol
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


def test_uvicorn_uses_only_what_the_light_queue_and_flag_provide() -> None:
    """KudaWebSocketProtocol swaps uvicorn's asyncio.Queue and Event for Inbox and Flag: any
    other method uvicorn starts calling on them must be added (or the swap dropped)."""
    source = inspect.getsource(WebSocketsSansIOProtocol)
    queue_calls = set(re.findall(r"self\.queue\.(\w+)", source))
    writable_calls = set(re.findall(r"self\.writable\.(\w+)", source))
    assert queue_calls <= {"put_nowait", "get", "empty", "qsize"}, queue_calls
    assert writable_calls <= {"set", "clear", "wait", "is_set"}, writable_calls


async def test_inbox_hands_items_over_in_order_and_keeps_nothing_when_idle() -> None:
    inbox = Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await reader == 1
    assert inbox.qsize() == 1 and await inbox.get() == 2
    assert inbox.empty() and inbox._items is None and inbox._waiter is None
    cancelled = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    inbox.put_nowait(3)  # a cancelled reader leaves no stale waiter behind
    assert await inbox.get() == 3


async def test_flag_wakes_every_waiter_on_set() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    flag.clear()
    assert not flag.is_set()
    flag.set()
    assert await flag.wait()


async def test_a_refused_handshake_is_no_server_error(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal is a denial response: uvicorn must not log it as an ASGI error."""
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(live.ws_url, "not-a-token"):
                pass
        assert refused.value.response.status_code == 401
        async with httpx.AsyncClient(base_url=live.http) as http:  # the server moved on
            assert (await http.get("/healthz")).status_code == 200
        await asyncio.sleep(0.1)
    assert "rejected (401" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
