"""The Python client against real `kuda serve` processes: an instance restarts (SIGTERM, close
1012) or dies (SIGKILL, no close frame) while events keep being written on another instance;
the client reconnects by itself and every event arrives once, in order."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import pytest

from kuda.client import Backoff, Client, StateChange
from tests import services
from tests.client.conftest import account_on, append_events, login_token, seqs, take
from tests.cluster import Cluster
from tests.live import LiveServer

pytestmark = pytest.mark.slow

TOTAL = 300


async def _write_slowly(writer: LiveServer, channel: str) -> None:
    for i in range(1, TOTAL + 1):
        await append_events(writer, channel, i, 1)
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("sig", "close_code"), [(signal.SIGTERM, 1012), (signal.SIGKILL, 1006)], ids=["restart", "kill"]
)
async def test_events_written_while_the_instance_is_down_arrive_once_in_order(
    cluster_factory: Callable[[str], Cluster], redis: Any, sig: signal.Signals, close_code: int
) -> None:
    cluster = cluster_factory(services.REDIS_URL)
    a = await cluster.process("a")
    b = await cluster.in_process()  # writes the events, and signs the user in
    account = await account_on(b.http)
    channel = f"user:{account.id}"
    changes: list[StateChange] = []
    client = Client(a.base_url, login_token(b.http, account), backoff=Backoff(0.1, 1.0))
    client.on_state(changes.append)
    async with client:
        sub = await client.subscribe(channel)
        writer = asyncio.create_task(_write_slowly(b, channel))
        frames = await take(sub, 30)
        await asyncio.to_thread(a.stop, sig)
        await client.wait_for("disconnected")
        await asyncio.sleep(0.5)  # events keep coming while no instance serves the client
        await cluster.process("a-again", port=a.port)
        frames += await take(sub, TOTAL - 30, timeout=60)
        await writer
        assert seqs(frames) == list(range(1, TOTAL + 1))
        assert [f["data"]["i"] for f in frames] == list(range(1, TOTAL + 1))
        assert sub.resets == 0 and client.connections == 2
        with pytest.raises(TimeoutError):  # and nothing twice
            await take(sub, 1, timeout=1)
    assert any(c.state == "disconnected" and c.code == close_code for c in changes)
