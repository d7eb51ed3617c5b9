"""Live state feeds: a live-only channel whose events carry a state that changes now and then
(a dashboard's figures), computed by each instance for its own subscribers.

While this instance has subscribers on the channel, the feed calls `produce` (the domain's: it
must return the cluster-wide state) about once per `interval_s`, and pushes an event to each
subscriber whose last event carried different data. Guarantees, per subscription:
- at most one event per `interval_s` (measured where the frame is queued);
- an event only when the state differs from the one that subscription last received;
- a first event promptly after `subscribed` (the wake-up of a new subscription is rate-limited to
  one `produce` per `min_gap_s`), so a dashboard is never empty for long.
Nothing goes through the broker and no instance leads: each computes its own. A `produce` that
fails (raises, or returns None) is skipped: the subscribers keep the last state they had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.faults import log_failure
from channels.hub import Hub, OutFrame, Subscription
from channels.protocol import encode
from channels.types import Event, utcnow

log = logging.getLogger("kuda.feed")

Produce = Callable[[], Awaitable[dict[str, Any] | None]]
"""The current state, or None when it cannot be had right now (nothing is pushed)."""
MARGIN_S = 0.05
"""Regular ticks are `interval_s + MARGIN_S` apart, so the network's jitter does not show a
client two events less than `interval_s` apart."""


class StateFeed:
    def __init__(
        self,
        hub: Hub,
        channel: str,
        event: str,
        produce: Produce,
        *,
        interval_s: float = 1.0,
        min_gap_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub, self.channel, self.event = hub, channel, event
        self._produce = produce
        self.interval_s = interval_s
        self._min_gap_s = min_gap_s
        self._clock = clock
        self._sent: dict[Subscription, tuple[dict[str, Any], float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_produce = float("-inf")

    async def start(self) -> None:
        self.hub.watch(self.channel, self._wake.set)
        self._task = asyncio.create_task(self._run(), name=f"kuda-feed-{self.channel}")

    async def stop(self) -> None:
        self.hub.watch(self.channel, None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        due = self._clock()
        while True:
            woken = await self._sleep(due - self._clock())
            if woken:  # a new subscription: serve it soon, not more often than min_gap_s
                await asyncio.sleep(max(0.0, self._last_produce + self._min_gap_s - self._clock()))
            else:
                due = max(due + self.interval_s + MARGIN_S, self._clock())
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, f"{self.channel} feed failed", exc)

    async def _sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when a new subscription woke the feed first."""
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        finally:
            self._wake.clear()
        return True

    async def tick(self) -> None:
        """Compute the state once if anyone listens here, and push it where it is owed."""
        if not self.hub.local_subscriptions(self.channel):
            self._sent.clear()
            return
        self._last_produce = self._clock()
        data = await self._produce()
        if data is None:
            return
        now = self._clock()
        owed: list[Subscription] = []
        sent: dict[Subscription, tuple[dict[str, Any], float]] = {}
        for sub in self.hub.local_subscriptions(self.channel):  # again: the await took time
            last = self._sent.get(sub)
            if last is not None and (last[0] == data or now - last[1] < self.interval_s):
                sent[sub] = last
            else:
                owed.append(sub)
                sent[sub] = (data, now)
        self._sent = sent  # subscriptions that ended are forgotten
        if owed:
            frame = OutFrame(encode(Event(self.channel, self.event, data, utcnow()).to_frame()))
            self.hub.push_local(owed, frame)
