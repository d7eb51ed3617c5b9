"""`StateFeed` (channels/feed.py) driven directly with a hand-moved clock: no I/O, no sleeps."""

from __future__ import annotations

from typing import Any

import orjson

from channels.brokers import MemoryBroker
from channels.feed import StateFeed
from channels.hub import Hub, OutFrame, Subscription
from channels.metrics import Metrics


class Screen:
    """A subscriber that keeps the data of each event it is pushed."""

    def __init__(self) -> None:
        self.user_id = 1
        self.seen: list[Any] = []

    def push(self, frame: OutFrame) -> None:
        event = orjson.loads(frame.payload)
        assert event["type"] == "event" and event["channel"] == "board" and "seq" not in event
        assert event["event"] == "board.state"
        self.seen.append(event["data"])

    def revoked(self, channel: str) -> None:
        raise AssertionError(channel)


class Setup:
    def __init__(self) -> None:
        self.now = 100.0
        self.state: dict[str, Any] | None = {"n": 0}
        self.produced = 0
        self.broker = MemoryBroker()
        self.hub = Hub(self.broker, None, Metrics())  # type: ignore[arg-type]  # live only
        self.woken = 0
        self.feed = StateFeed(
            self.hub, "board", "board.state", self.produce, clock=lambda: self.now
        )

    async def produce(self) -> dict[str, Any] | None:
        self.produced += 1
        return self.state

    async def join(self) -> tuple[Screen, Subscription]:
        screen = Screen()
        sub = await self.hub.attach(screen, "board", durable=False)
        assert self.hub.activate(sub, 0, 0)
        return screen, sub


async def test_pushes_only_changes_at_most_once_per_interval_per_subscription() -> None:
    s = Setup()
    await s.broker.start(s.hub.on_message, s.hub.resync)
    await s.feed.tick()
    assert s.produced == 0  # nobody listens on this instance: nothing computed
    a, _ = await s.join()
    await s.feed.tick()
    assert a.seen == [{"n": 0}]  # the first subscriber gets the state at once
    s.now += 5
    await s.feed.tick()
    assert a.seen == [{"n": 0}]  # unchanged: nothing
    s.state = {"n": 1}
    await s.feed.tick()
    assert a.seen == [{"n": 0}, {"n": 1}]
    s.state = {"n": 2}
    s.now += 0.5
    b, sub_b = await s.join()
    await s.feed.tick()
    assert a.seen == [{"n": 0}, {"n": 1}]  # changed, but a had an event 0.5 s ago
    assert b.seen == [{"n": 2}]  # a newcomer gets the current state
    s.now += 0.5
    await s.feed.tick()
    assert a.seen[-1] == {"n": 2} and len(b.seen) == 1  # a's second has passed; b is up to date
    s.state = None  # the state cannot be had: nothing pushed, nothing forgotten
    s.now += 1
    await s.feed.tick()
    assert len(a.seen) == 3 and len(b.seen) == 1
    s.hub.detach(sub_b)
    s.state = {"n": 3}
    await s.feed.tick()
    assert a.seen[-1] == {"n": 3} and len(b.seen) == 1  # b left: only a
    await s.hub.close()


async def test_a_new_subscription_wakes_the_feed() -> None:
    s = Setup()
    await s.broker.start(s.hub.on_message, s.hub.resync)
    s.hub.watch("board", lambda: setattr(s, "woken", s.woken + 1))
    await s.join()
    await s.join()
    assert s.woken == 2
    s.hub.watch("board", None)
    await s.join()
    assert s.woken == 2
    await s.hub.close()
