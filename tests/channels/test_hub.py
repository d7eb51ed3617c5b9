"""The hub's ordering rules, driven directly (real PostgreSQL for its head reads)."""

from __future__ import annotations

import asyncio
import time

import orjson
from fastapi import FastAPI

from channels import envelope
from channels.brokers import MemoryBroker
from channels.hub import Hub, OutFrame
from channels.metrics import Metrics


class Recorder:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.seqs: list[int] = []
        self.revoked_channels: list[str] = []

    def push(self, frame: OutFrame) -> None:
        self.seqs.append(orjson.loads(frame.payload)["seq"])

    def revoked(self, channel: str) -> None:
        self.revoked_channels.append(channel)


def _event(seq: int) -> bytes:
    return envelope.durable(seq, 0, time.time(), orjson.dumps({"seq": seq}))


async def test_a_slower_first_subscriber_still_gets_what_committed_during_its_sync(
    app: FastAPI,
) -> None:
    """A (read head 0) and B (read head 2, after events 1-2) sync concurrently on a channel new
    to this instance, and B finishes first: A must still get 1 and 2 from its buffer."""
    broker = MemoryBroker()
    hub = Hub(broker, app.state.sessionmaker, Metrics())
    await broker.start(hub.on_message, hub.resync)
    a, b = Recorder(1), Recorder(1)
    sub_a = await hub.attach(a, "user:1", durable=True)  # A reads the head: 0
    await broker.publish([("user:1", _event(1)), ("user:1", _event(2))])
    sub_b = await hub.attach(b, "user:1", durable=True)  # B reads the head: 2
    assert hub.activate(sub_b, 2, 0)
    assert hub.activate(sub_a, 0, 0)
    await broker.publish([("user:1", _event(3))])
    assert a.seqs == [1, 2, 3]
    assert b.seqs == [3]
    await hub.close()


async def test_duplicates_are_dropped_and_out_of_order_waits(app: FastAPI) -> None:
    broker = MemoryBroker()
    hub = Hub(broker, app.state.sessionmaker, Metrics(), gap_wait_s=0.5)
    await broker.start(hub.on_message, hub.resync)
    rec = Recorder(1)
    sub = await hub.attach(rec, "user:1", durable=True)
    assert hub.activate(sub, 0, 0)
    await broker.publish([("user:1", _event(1)), ("user:1", _event(1)), ("user:1", _event(3))])
    assert rec.seqs == [1]  # 3 waits for 2
    await broker.publish([("user:1", _event(2)), ("user:1", _event(3))])
    for _ in range(50):
        if rec.seqs == [1, 2, 3]:
            break
        await asyncio.sleep(0.01)
    assert rec.seqs == [1, 2, 3]
    await hub.close()
