"""FastAPI + broadcaster, the naive way: every socket subscribes to the channel and awaits
`send_text` for each message. No auth, no database (the peers only fan out)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

CHANNEL = os.environ.get("PEER_CHANNEL", "hot")
broadcast = Broadcast(os.environ["REDIS_URL"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        async with broadcast.subscribe(channel=CHANNEL) as subscriber:
            async for event in subscriber:  # type: ignore[union-attr]
                await websocket.send_text(event.message)
    except WebSocketDisconnect:
        pass
