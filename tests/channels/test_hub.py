"""The hub's ordering rules, driven directly (real PostgreSQL for its head reads)."""

from __future__ import annotations

import asyncio
import time

import orjson
from fastapi import FastAPI

from channels import append, envelope
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


async def test_the_subscribers_that_open_a_channel_sync_against_the_hubs_own_head_read(
    app: FastAPI,
) -> None:
    """The hub reads a new channel's head after subscribing upstream; the subscriptions that
    were already buffering then (the ones that opened it) reuse that read instead of reading
    the same row again (a resume storm opens thousands of channels at once). One that attaches
    later has to read the head itself: events before its attach were not buffered for it."""
    channel = "user:41"
    async with app.state.sessionmaker() as session:
        for i in range(3):
            await append(session, channel, "note", {"n": i})
        await session.commit()
    broker = MemoryBroker()
    hub = Hub(broker, app.state.sessionmaker, Metrics())
    await broker.start(hub.on_message, hub.resync)
    first, second = await asyncio.gather(
        hub.attach(Recorder(41), channel, durable=True),
        hub.attach(Recorder(41), channel, durable=True),
    )
    assert first.state is not None and first.state.head == 3
    assert second.state is not None and second.state.head == 3
    late = await hub.attach(Recorder(41), channel, durable=True)
    assert late.state is None
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


# Coalescing: what a node runs (Hub(coalesce=True)) --------------------------------------------


class Writes:
    """Records each push as the list of seqs it carried (one push = one transport write)."""

    def __init__(self, user_id: int = 1) -> None:
        self.user_id = user_id
        self.writes: list[list[int]] = []
        self.frames: list[OutFrame] = []

    def push(self, frame: OutFrame) -> None:
        parts = frame.parts if frame.parts is not None else (frame.payload,)
        self.writes.append([orjson.loads(p)["seq"] for p in parts])
        self.frames.append(frame)

    def revoked(self, channel: str) -> None:
        pass

    @property
    def seqs(self) -> list[int]:
        return [s for w in self.writes for s in w]


async def _coalescing_hub(app: FastAPI) -> tuple[MemoryBroker, Hub]:
    broker = MemoryBroker()
    hub = Hub(broker, app.state.sessionmaker, Metrics(), coalesce=True)
    await broker.start(hub.on_message, hub.resync)
    return broker, hub


async def _live(hub: Hub, rec: Writes, channel: str = "user:1", floor: int = 0) -> None:
    sub = await hub.attach(rec, channel, durable=True)
    assert hub.activate(sub, floor, 0)


async def test_a_burst_reaches_each_subscriber_as_one_write_in_order(app: FastAPI) -> None:
    broker, hub = await _coalescing_hub(app)
    a, b = Writes(), Writes()
    await _live(hub, a)
    await _live(hub, b)
    await broker.publish([("user:1", _event(n)) for n in (1, 2, 3)])
    assert a.writes == [] and b.writes == []  # written at the end of this loop iteration
    await asyncio.sleep(0)
    assert a.writes == [[1, 2, 3]] and b.writes == [[1, 2, 3]]
    singles = [OutFrame(orjson.dumps({"seq": n})).ws for n in (1, 2, 3)]
    assert a.frames[0].ws == b"".join(singles)  # the frames back to back, one transport write
    assert a.frames[0] is b.frames[0]  # joined once per channel, not per subscriber
    await hub.close()


async def test_events_of_different_iterations_are_separate_writes(app: FastAPI) -> None:
    broker, hub = await _coalescing_hub(app)
    rec = Writes()
    await _live(hub, rec)
    await broker.publish([("user:1", _event(1))])
    await asyncio.sleep(0)
    await broker.publish([("user:1", _event(2)), ("user:1", _event(3))])
    await asyncio.sleep(0)
    assert rec.writes == [[1], [2, 3]]
    assert rec.frames[0].parts is None  # a lone frame is written as it is
    await hub.close()


async def test_duplicates_and_gaps_are_still_resolved_inside_a_burst(app: FastAPI) -> None:
    broker = MemoryBroker()
    hub = Hub(broker, app.state.sessionmaker, Metrics(), gap_wait_s=0.5, coalesce=True)
    await broker.start(hub.on_message, hub.resync)
    rec = Writes()
    await _live(hub, rec)
    burst = [1, 1, 3, 2, 3, 4]
    await broker.publish([("user:1", _event(n)) for n in burst])
    for _ in range(100):
        if rec.seqs == [1, 2, 3, 4]:
            break
        await asyncio.sleep(0.01)
    assert rec.seqs == [1, 2, 3, 4]
    await hub.close()


async def test_a_subscriber_activated_mid_burst_gets_each_event_once(app: FastAPI) -> None:
    """B syncs while a burst is pending for the live A: B's replay covered seq 1, so it must
    get 2 (from its buffer) and never the burst's copy of 1 or 2 again."""
    broker, hub = await _coalescing_hub(app)
    a, b = Writes(), Writes()
    await _live(hub, a)
    sub_b = await hub.attach(b, "user:1", durable=True)
    await broker.publish([("user:1", _event(1)), ("user:1", _event(2))])
    assert hub.activate(sub_b, 1, 0)  # before the end of the iteration
    await broker.publish([("user:1", _event(3))])
    await asyncio.sleep(0)
    assert a.seqs == [1, 2, 3]
    assert b.seqs == [2, 3]
    await hub.close()


async def test_a_subscriber_catching_up_joins_the_burst_without_repeats(app: FastAPI) -> None:
    """C's sync saw head 2 before the hub did (it is ahead of the hub: catching); the burst
    1..4 brings the hub past it. C gets 3 and 4 once, A gets everything."""
    broker, hub = await _coalescing_hub(app)
    a, c = Writes(), Writes()
    await _live(hub, a)
    sub_c = await hub.attach(c, "user:1", durable=True)
    assert hub.activate(sub_c, 2, 0)
    await broker.publish([("user:1", _event(n)) for n in (1, 2, 3, 4)])
    for _ in range(100):
        if a.seqs == [1, 2, 3, 4]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    assert a.seqs == [1, 2, 3, 4]
    assert c.seqs == [3, 4]
    await hub.close()


async def test_an_ephemeral_event_follows_the_durable_ones_before_it(app: FastAPI) -> None:
    broker, hub = await _coalescing_hub(app)
    order: list[str] = []

    class Both(Writes):
        def push(self, frame: OutFrame) -> None:
            parts = frame.parts if frame.parts is not None else (frame.payload,)
            order.extend(str(orjson.loads(p).get("seq", "typing")) for p in parts)

    rec = Both(user_id=2)
    await _live(hub, rec)
    typing = envelope.ephemeral(1, time.time(), orjson.dumps({"event": "typing"}))
    await broker.publish([("user:1", _event(1)), ("user:1", _event(2)), ("user:1", typing)])
    await asyncio.sleep(0)
    assert order == ["1", "2", "typing"]
    await hub.close()
