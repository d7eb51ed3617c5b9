"""Local fan-out: which socket listens to which channel, on this instance.

- One broker subscription per channel per instance, reference-counted; released lazily
  (`linger_s`) so reconnect churn does not thrash the broker.
- Each event's frame is built once per instance and written to every subscriber without an
  `await` per subscriber (`Subscriber.push` is synchronous and never blocks).
- With `coalesce` (what a node runs), the frames a channel receives within one event-loop
  iteration (a burst read from the broker at once) are joined once per channel and written to
  each subscriber in one push: one transport write per socket instead of one per event.
- Durable events reach subscribers once, in seq order: duplicates (relay re-publishes) are
  dropped, out-of-order arrivals wait briefly, and gaps are filled from PostgreSQL with one query
  per channel (never per subscriber).
- A revocation committed on a channel removes the revoked user's subscriptions before any
  event committed after it is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import envelope, events
from channels.brokers.base import Broker
from channels.faults import log_failure
from channels.metrics import Metrics
from channels.protocol import encode, ws_text_frame

log = logging.getLogger("kuda.hub")


class OutFrame:
    """A server frame encoded once: `payload` (JSON) and `ws` (the WebSocket frame bytes).

    A joined frame (`OutFrame.join`) carries several frames in order: `ws` is their bytes back
    to back (one write), `parts` their payloads (for writers that send message by message)."""

    __slots__ = ("count", "parts", "payload", "ws")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.ws = ws_text_frame(payload)
        self.parts: tuple[bytes, ...] | None = None
        self.count = 1

    @classmethod
    def join(cls, frames: list[OutFrame]) -> OutFrame:
        out = cls.__new__(cls)
        out.payload = b""
        out.ws = b"".join([f.ws for f in frames])
        out.parts = tuple(f.payload for f in frames)
        out.count = len(frames)
        return out


class Subscriber(Protocol):
    """One socket, as the hub sees it."""

    user_id: int

    def push(self, frame: OutFrame) -> None:
        """Queue a frame for the socket; never blocks (closes the socket 4429 on overflow)."""

    def revoked(self, channel: str) -> None:
        """The user lost the right to read `channel`: the hub has already dropped it."""


class Subscription:
    __slots__ = ("acl", "buffer", "channel", "dropped", "floor", "state", "subscriber")

    def __init__(self, subscriber: Subscriber, channel: str) -> None:
        self.subscriber = subscriber
        self.channel = channel
        self.acl = 0  # acl_version the user was authorized at
        self.floor = 0  # last seq this subscription has had
        self.buffer: list[tuple[int, OutFrame]] = []  # live events while syncing
        self.dropped = False
        # The channel's state as read by the hub after this subscription was already
        # buffering (the read that opened the channel): its subscriber may sync against it
        # instead of reading it again. None: read it yourself.
        self.state: events.ChannelState | None = None


class _Channel:
    __slots__ = (
        "acl",
        "catching",
        "durable",
        "last_seq",
        "linger",
        "live",
        "name",
        "out",
        "pending",
        "push_live",
        "ready",
        "repair",
        "syncing",
        "target",
        "want_acl",
    )

    def __init__(self, name: str, durable: bool) -> None:
        self.name = name
        self.durable = durable
        self.live: dict[Subscription, Callable[[OutFrame], None]] = {}
        self.syncing: set[Subscription] = set()
        self.catching: set[Subscription] = set()
        self.last_seq: int | None = None  # None until the first subscriber has synced
        self.acl = 0
        self.want_acl = 0
        self.target = 0  # a head seen in PostgreSQL that must be reached
        self.pending: dict[int, tuple[int, OutFrame]] = {}
        self.out: list[OutFrame] = []  # delivered to `live`, not yet written (coalescing)
        self.repair: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] | None = None
        self.linger: asyncio.TimerHandle | None = None

    def empty(self) -> bool:
        return not (self.live or self.syncing or self.catching)

    def all_subscriptions(self) -> list[Subscription]:
        return [*self.live, *self.syncing, *self.catching]


class Hub:
    def __init__(
        self,
        broker: Broker,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        *,
        gap_wait_s: float = 0.05,
        linger_s: float = 10.0,
        coalesce: bool = False,
    ) -> None:
        self.broker = broker
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._tallies = metrics.tallies
        self._gap_wait_s = gap_wait_s
        self._linger_s = linger_s
        self._channels: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._coalesce = coalesce
        self._dirty: list[_Channel] = []
        self._flush_handle: asyncio.Handle | None = None
        self._watchers: dict[str, Callable[[], None]] = {}

    # Subscriptions -----------------------------------------------------------------------

    async def attach(self, subscriber: Subscriber, channel: str, durable: bool) -> Subscription:
        """Start listening (events are buffered on the subscription until `activate`).
        Returns once the broker subscription is active, so nothing published after this can
        be missed by the replay that follows."""
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(channel, durable)
            ch.ready = asyncio.ensure_future(self._open(ch))
        else:
            if ch.linger is not None:
                ch.linger.cancel()
                ch.linger = None
            ready = ch.ready
            if ready is not None and ready.done() and not ready.cancelled() and ready.exception():
                ch.ready = asyncio.ensure_future(self._open(ch))  # the last attempt failed
        sub = Subscription(subscriber, channel)
        ch.syncing.add(sub)
        self._tallies.subscriptions += 1
        assert ch.ready is not None
        try:
            await asyncio.shield(ch.ready)
        except BaseException:
            self.detach(sub)
            raise
        return sub

    async def _open(self, ch: _Channel) -> None:
        """Subscribe upstream, then take the channel's head from PostgreSQL: from here on the
        hub is live from that seq, and every subscriber syncs against it (its own read comes
        later, so the events between the two reach it through its buffer)."""
        await self.broker.subscribe(ch.name)
        if not ch.durable or ch.last_seq is not None:
            return
        # Subscriptions buffering before this read began (the broker subscription is active)
        # miss nothing that commits after it: they may sync against it (`Subscription.state`),
        # which saves the first subscriber of a channel a second read of the same row.
        waiting = list(ch.syncing)
        async with self._sessionmaker() as session:
            state = await events.state(session, ch.name)
        for sub in waiting:
            sub.state = state
        if ch.last_seq is None:
            ch.last_seq = state.head
            ch.acl = ch.want_acl = max(ch.acl, state.acl)
            if ch.pending:
                self._schedule_repair(ch)

    def activate(self, sub: Subscription, floor: int, acl: int) -> bool:
        """The subscriber has had everything up to `floor` (replay + ack): deliver what was
        buffered after it, then follow the channel live. False if it was dropped meanwhile."""
        if sub.dropped:
            return False
        ch = self._channels[sub.channel]
        self._flush_channel(ch)  # what `live` was owed goes out before it changes
        ch.syncing.discard(sub)
        sub.acl = acl
        sub.floor = floor
        position = ch.last_seq
        if ch.durable:
            assert position is not None, "attach() returns after _open() set the position"
            ch.target = max(ch.target, floor)
            if ch.pending or ch.target > position or ch.want_acl > ch.acl:
                self._schedule_repair(ch)
        for seq, frame in sub.buffer:
            if seq > sub.floor:
                sub.subscriber.push(frame)
                sub.floor = seq
        sub.buffer = []
        if position is None or position >= sub.floor:  # live-only channels have no position
            ch.live[sub] = sub.subscriber.push
        else:
            ch.catching.add(sub)
        if (watcher := self._watchers.get(sub.channel)) is not None:
            watcher()
        return True

    def detach(self, sub: Subscription) -> None:
        sub.dropped = True
        ch = self._channels.get(sub.channel)
        if ch is None:
            return
        self._flush_channel(ch)
        removed = ch.live.pop(sub, None) is not None
        for group in (ch.syncing, ch.catching):
            if sub in group:
                group.discard(sub)
                removed = True
        if removed:
            self._tallies.subscriptions -= 1
        if ch.empty() and ch.linger is None:
            ch.linger = asyncio.get_running_loop().call_later(self._linger_s, self._release, ch)

    def _release(self, ch: _Channel) -> None:
        ch.linger = None
        if not ch.empty() or self._channels.get(ch.name) is not ch:
            return
        del self._channels[ch.name]
        if ch.repair is not None:
            ch.repair.cancel()
        self._spawn(self.broker.unsubscribe(ch.name))

    def subscribed(self, channel: str) -> bool:
        return channel in self._channels

    # Local delivery (no broker) -------------------------------------------------------------

    def watch(self, channel: str, on_activated: Callable[[], None] | None) -> None:
        """Call `on_activated` (synchronously) each time a subscription to `channel` on this
        instance goes live (after its `subscribed` ack); None stops watching."""
        if on_activated is None:
            self._watchers.pop(channel, None)
        else:
            self._watchers[channel] = on_activated

    def local_subscriptions(self, channel: str) -> list[Subscription]:
        """This instance's live subscriptions to `channel` (none of another instance)."""
        ch = self._channels.get(channel)
        return [*ch.live, *ch.catching] if ch is not None else []

    def push_local(self, subscriptions: list[Subscription], frame: OutFrame) -> None:
        """Write one frame to these subscriptions of this instance only (no broker): for
        state that every instance computes for its own subscribers."""
        for sub in subscriptions:
            if not sub.dropped:
                ch = self._channels.get(sub.channel)
                if ch is not None:
                    self._flush_channel(ch)  # after what the broker delivered before it
                sub.subscriber.push(frame)
                self._tallies.delivered += 1

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    # Broker messages ---------------------------------------------------------------------

    def on_message(self, channel: str, message: bytes) -> None:
        ch = self._channels.get(channel)
        if ch is None:
            return
        try:
            env = envelope.decode(message)
        except ValueError:
            log.warning("dropping malformed broker message on %s", channel)
            return
        if isinstance(env, envelope.Durable):
            self._offer(ch, env.seq, env.acl, OutFrame(env.payload))
            self._metrics.latency.observe(max(0.0, time.time() - env.published_at))
        elif isinstance(env, envelope.Ephemeral):
            self._fan_out_ephemeral(ch, env.exclude_user, OutFrame(env.payload))
        elif isinstance(env, envelope.Revoked) and env.acl > ch.want_acl:
            ch.want_acl = env.acl
            self._schedule_repair(ch)

    def _offer(self, ch: _Channel, seq: int, acl: int, frame: OutFrame) -> None:
        last = ch.last_seq
        if last is not None and seq <= last:
            return  # duplicate (relay, resync)
        if last is None or ch.repair is not None or seq != last + 1 or acl > ch.acl:
            ch.pending[seq] = (acl, frame)
            if last is not None:
                self._schedule_repair(ch)
            return
        self._deliver(ch, seq, frame)

    def _deliver(self, ch: _Channel, seq: int, frame: OutFrame) -> None:
        ch.last_seq = seq
        if ch.live:
            ch.out.append(frame)
            if len(ch.out) == 1:
                self._mark_dirty(ch)
        for sub in ch.syncing:
            sub.buffer.append((seq, frame))
        if ch.catching:
            self._flush_channel(ch)
            self._deliver_catching(ch, seq, frame)

    def _mark_dirty(self, ch: _Channel) -> None:
        self._dirty.append(ch)
        if self._flush_handle is None:
            if self._coalesce:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
            else:
                self._flush()

    def _flush(self) -> None:
        """Write what each channel received since the last flush: one push per subscriber."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for ch in dirty:
            self._flush_channel(ch)

    def _flush_channel(self, ch: _Channel) -> None:
        frames = ch.out
        if not frames:
            return
        ch.out = []
        frame = frames[0] if len(frames) == 1 else OutFrame.join(frames)
        for push in ch.live.values():
            push(frame)
        self._tallies.delivered += len(ch.live) * len(frames)

    def _deliver_catching(self, ch: _Channel, seq: int, frame: OutFrame) -> None:
        for sub in list(ch.catching):
            if seq > sub.floor:
                sub.subscriber.push(frame)
                sub.floor = seq
            if seq >= sub.floor:
                ch.catching.discard(sub)
                ch.live[sub] = sub.subscriber.push

    def _fan_out_ephemeral(self, ch: _Channel, exclude_user: int, frame: OutFrame) -> None:
        self._flush_channel(ch)  # after the durable frames that came before it
        for sub in [*ch.live, *ch.catching]:
            if sub.subscriber.user_id != exclude_user:
                sub.subscriber.push(frame)

    # Repair: ordering, gaps, revocations --------------------------------------------------

    def _schedule_repair(self, ch: _Channel) -> None:
        if ch.repair is None and ch.last_seq is not None:
            ch.repair = asyncio.create_task(self._repair(ch), name=f"kuda-repair-{ch.name}")

    async def _repair(self, ch: _Channel) -> None:
        try:
            while await self._repair_step(ch):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(log, f"repair of {ch.name} failed; retrying on the next resync", exc)
        finally:
            ch.repair = None

    async def _repair_step(self, ch: _Channel) -> bool:
        """One pass; returns whether another is needed."""
        assert ch.last_seq is not None
        if ch.want_acl > ch.acl:
            await self._apply_revocations(ch, ch.want_acl)
        await self._drain(ch)
        ch.pending = {s: v for s, v in ch.pending.items() if s > ch.last_seq}
        if ch.target <= ch.last_seq and not ch.pending:
            return False
        if ch.target <= ch.last_seq:  # out of order: give in-flight messages a moment
            await asyncio.sleep(self._gap_wait_s)
            await self._drain(ch)
            if not ch.pending or ch.last_seq + 1 in ch.pending:
                return bool(ch.pending)
        await self._fill_gap(ch)
        return True

    async def _drain(self, ch: _Channel) -> None:
        assert ch.last_seq is not None
        while (item := ch.pending.pop(ch.last_seq + 1, None)) is not None:
            acl, frame = item
            if acl > ch.acl:
                await self._apply_revocations(ch, acl)
            self._deliver(ch, ch.last_seq + 1, frame)

    async def _fill_gap(self, ch: _Channel) -> None:
        assert ch.last_seq is not None
        upto = max(ch.target, min(ch.pending, default=0) - 1)
        async with self._sessionmaker() as session:
            rows = await events.replay(session, ch.name, ch.last_seq, upto)
        self._metrics.gap_fills.inc()
        for row in rows:
            assert row.event.seq is not None
            ch.pending.setdefault(row.event.seq, (row.acl, OutFrame(encode(row.event.to_frame()))))
        if not rows:  # trimmed by retention meanwhile: nothing left to deliver below `upto`
            log.warning("events %s..%s of %s are gone; skipping", ch.last_seq + 1, upto, ch.name)
            ch.last_seq = upto
        await self._drain(ch)

    async def _apply_revocations(self, ch: _Channel, upto_acl: int) -> None:
        async with self._sessionmaker() as session:
            revs = await events.revocations(session, ch.name, ch.acl)
        for acl, user_id in revs:
            if acl > upto_acl:
                break
            self._revoke(ch, acl, user_id)
            ch.acl = acl
        ch.acl = max(ch.acl, upto_acl)

    def _revoke(self, ch: _Channel, acl: int, user_id: int) -> None:
        for sub in ch.all_subscriptions():
            if sub.subscriber.user_id == user_id and sub.acl < acl:
                self.detach(sub)
                sub.subscriber.revoked(ch.name)

    # Resync -------------------------------------------------------------------------------

    async def resync(self) -> None:
        """Catch up every durable channel with PostgreSQL (after a broker reconnect, and
        periodically as a safety net for lost pub/sub messages)."""
        names = [n for n, ch in self._channels.items() if ch.durable and ch.last_seq is not None]
        for i in range(0, len(names), 5000):
            async with self._sessionmaker() as session:
                heads = await events.states(session, names[i : i + 5000])
            for name, (head, acl) in heads.items():
                self._catch_up(name, head, acl)

    def _catch_up(self, name: str, head: int, acl: int) -> None:
        ch = self._channels.get(name)
        if ch is None or ch.last_seq is None:
            return
        if head > ch.last_seq or acl > ch.acl:
            ch.target = max(ch.target, head)
            ch.want_acl = max(ch.want_acl, acl)
            self._schedule_repair(ch)

    # Lifecycle ----------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        for ch in self._channels.values():
            if ch.linger is not None:
                ch.linger.cancel()
            if ch.repair is not None:
                ch.repair.cancel()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._channels.clear()
