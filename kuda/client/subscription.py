"""One consumer of a channel: an async iterator that yields each durable seq once, in order.

Events reach a subscription from the socket (live, or replayed after a `subscribe` with
`since`) and from the REST replay when there is a gap: an ack that could not replay
(`recovered: false`), a `since` older than the channel's live position, or events dropped
because the consumer fell `max_buffer` behind. When the history is gone (older than the
server's retention) the iterator yields `{"type": "reset", "channel", "seq"}`: refetch the
state by REST; events after `seq` follow. A reset with `seq: None` on a live-only channel
(`rides`) after a reconnect says the same: events were missed while away."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Generator
from typing import Any, Protocol

import httpx

from kuda.client.ordering import Sequencer
from kuda.client.replay import MAX_PAGE, ReplayPage
from kuda.client.types import Frame, ServerError

NO_PROGRESS_LIMIT = 10  # REST pages in a row that bring nothing before giving up on a gap


class Owner(Protocol):
    async def replay_page(self, channel: str, since: int, limit: int) -> ReplayPage: ...

    def release(self, sub: Subscription) -> None: ...

    def retry_delay(self, attempt: int) -> float: ...


class Subscription:
    """Iterate with `async for event in sub`; `await sub` waits for the server's ack."""

    def __init__(self, owner: Owner, channel: str, since: int | None, max_buffer: int) -> None:
        self.channel = channel
        self._owner = owner
        self._seq = Sequencer(since, max_held=max_buffer)
        self._max = max_buffer
        self._queue: collections.deque[Frame] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._acked = asyncio.Event()
        self._error: BaseException | None = None
        self._done = False
        self._fill: asyncio.Task[None] | None = None
        self.acks = 0
        self.resets = 0

    @property
    def last_seq(self) -> int | None:
        """The seq of the last durable event queued for the consumer (None before the ack
        of a subscription made without `since`)."""
        return self._seq.last

    @property
    def active(self) -> bool:
        return not self._done

    # Consumer side -----------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frame:
        while True:
            if self._queue:
                frame = self._queue.popleft()
                if len(self._queue) <= self._max // 2:
                    self._room.set()
                return frame
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._until_acked().__await__()

    async def _until_acked(self) -> Subscription:
        await self._acked.wait()
        if self._error is not None:
            raise self._error
        return self

    def unsubscribe(self) -> asyncio.Future[None]:
        """Stop this subscription (the server is told after a short grace period when no other
        subscription of the channel remains). Returns a completed future, so it may be awaited."""
        self._finish(None)
        self._owner.release(self)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    close = unsubscribe

    async def __aenter__(self) -> Subscription:
        return await self

    async def __aexit__(self, *exc: object) -> None:
        self.unsubscribe()

    # Client side --------------------------------------------------------------------------

    def offer(self, frame: Frame) -> None:
        if self._done:
            return
        if frame.get("seq") is None:  # ephemeral: never replayed, dropped if the consumer lags
            if self.acks and len(self._queue) < self._max:
                self._push(frame)
            return
        if len(self._queue) >= self._max:
            self._seq.overflowed = self._seq.started  # fetched from REST once there is room
        else:
            self._push(*self._seq.offer(frame))
        self._maybe_fill()

    def on_ack(self, frame: Frame) -> None:
        """The server's `subscribed` for this channel (first one or after a reconnect)."""
        if self._done:
            return
        self.acks += 1
        self._acked.set()
        seq = frame.get("seq")
        if seq is None:  # live only: whatever happened while away is lost
            if self.acks > 1:
                self._reset(None)
            return
        if not self._seq.started:
            self._push(*self._seq.start(int(seq)))
        elif self._seq.last is not None and self._seq.last > seq:
            self._reset(int(seq))  # the server's history is not the one we followed
        else:
            self._seq.expect(int(seq))
        self._maybe_fill()

    def end(self, error: BaseException | None) -> None:
        """No more events: the iterator ends (raising `error` when given)."""
        self._finish(error)

    # Internals -----------------------------------------------------------------------------

    def _finish(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._done, self._error = True, error
        if self._fill is not None and self._fill is not asyncio.current_task():
            self._fill.cancel()
        self._ready.set()
        self._acked.set()
        self._room.set()

    def _push(self, *frames: Frame) -> None:
        if frames:
            self._queue.extend(frames)
            self._ready.set()
            if len(self._queue) > self._max // 2:
                self._room.clear()

    def _reset(self, seq: int | None) -> None:
        self.resets += 1
        self._push({"type": "reset", "channel": self.channel, "seq": seq})
        if seq is not None:
            self._push(*self._seq.reset(seq))

    def _maybe_fill(self) -> None:
        if self._seq.wants_fill and (self._fill is None or self._fill.done()):
            self._fill = asyncio.create_task(self._filler(), name=f"kuda-fill-{self.channel}")

    async def _filler(self) -> None:
        """Page the REST replay from `last` until no gap remains."""
        failures = stalls = 0
        while not self._done and self._seq.wants_fill:
            if len(self._queue) > self._max // 2:
                await self._room.wait()
                continue
            since = self._seq.last
            assert since is not None
            self._seq.overflowed = False
            try:
                page = await self._owner.replay_page(self.channel, since, MAX_PAGE)
            except ServerError as exc:
                self._finish(exc)
                self._owner.release(self)
                return
            except (httpx.HTTPError, OSError):
                failures += 1
                await asyncio.sleep(self._owner.retry_delay(failures))
                continue
            failures = 0
            if not page.recovered:
                self._reset(page.latest_seq)
                continue
            before = self._seq.last
            for item in page.items:
                self._push(*self._seq.offer(item))
            stalls = 0 if self._seq.last != before else stalls + 1
            if stalls >= NO_PROGRESS_LIMIT:  # the events are not there: say so, move on
                self._reset(max(page.latest_seq, self._seq.last or 0, self._seq.target))
            elif stalls:
                await asyncio.sleep(self._owner.retry_delay(stalls))
