"""group_send pre-made payloads to the group through the channel layer; commands on stdin."""

import asyncio
import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer.settings")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django

django.setup()

from channels.layers import get_channel_layer

GROUP = os.environ.get("PEER_CHANNEL", "hot")


async def main() -> None:
    layer = get_channel_layer()
    for line in sys.stdin:
        cmd = json.loads(line)
        start = time.monotonic()
        rate = float(cmd.get("rate") or 0)
        for k, template in enumerate(cmd["events"]):
            if rate > 0:
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            payload = template.replace("__T__", repr(time.time()))
            await layer.group_send(GROUP, {"type": "tick", "text": payload})
        print(json.dumps({"done": len(cmd["events"])}), flush=True)


asyncio.run(main())
