"""python-socketio with AsyncRedisManager: every client joins the room `hot` on connect; the
publisher (publish.py) emits to the room through Redis."""

from __future__ import annotations

import os
from typing import Any

import socketio

ROOM = os.environ.get("PEER_CHANNEL", "hot")
mgr = socketio.AsyncRedisManager(os.environ["REDIS_URL"])
sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr, cors_allowed_origins=[])
app = socketio.ASGIApp(sio)


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    await sio.enter_room(sid, ROOM)
