"""Emit pre-made payloads to the room through Redis (socketio's own message format), one line
of JSON commands on stdin at a time: {"events": [...payload strings...], "rate": r}."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import socketio

ROOM = os.environ.get("PEER_CHANNEL", "hot")


async def main() -> None:
    mgr = socketio.AsyncRedisManager(os.environ["REDIS_URL"], write_only=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        start = time.monotonic()
        rate = float(cmd.get("rate") or 0)
        for k, template in enumerate(cmd["events"]):
            if rate > 0:
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            payload = json.loads(template.replace("__T__", repr(time.time())))
            await mgr.emit("tick", payload, room=ROOM, namespace="/")
        print(json.dumps({"done": len(cmd["events"])}), flush=True)


asyncio.run(main())
