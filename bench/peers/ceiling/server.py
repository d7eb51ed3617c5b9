"""The practical ceiling: a bare picows server, no auth, no database. Each Redis message is
framed once and written to every connected transport."""

from __future__ import annotations

import asyncio
import os
import struct

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server
from redis.asyncio import Redis

CHANNEL = os.environ.get("PEER_CHANNEL", "hot")
transports: set[WSTransport] = set()


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class Listener(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        transports.add(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        transports.discard(transport)


async def relay() -> None:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        frame = text_frame(message["data"])
        for t in transports:
            t.underlying_transport.write(frame)


async def main() -> None:
    server = await ws_create_server(
        lambda request: Listener(),
        "127.0.0.1",
        int(os.environ["PORT"]),
        enable_auto_pong=True,
    )
    task = asyncio.create_task(relay())
    try:
        await server.serve_forever()
    finally:
        task.cancel()


if __name__ == "__main__":
    uvloop.run(main())
