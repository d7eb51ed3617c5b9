"""PUBLISH pre-made payloads straight into a Redis channel (broadcaster and the ceiling read raw
messages); commands on stdin, one JSON line each: {"events": [...], "rate": r}."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from redis.asyncio import Redis


async def main() -> None:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    channel = os.environ["PEER_CHANNEL"]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)  # a batch of events is one line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        start = time.monotonic()
        rate = float(cmd.get("rate") or 0)
        for k, template in enumerate(cmd["events"]):
            if rate > 0:
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await redis.publish(channel, template.replace("__T__", repr(time.time())))
        print(json.dumps({"done": len(cmd["events"])}), flush=True)
    await redis.aclose()


asyncio.run(main())
