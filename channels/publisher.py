"""Publishes committed events to the broker, in commit-notification order, and marks them
published. If the broker refuses, the events stay unpublished and the relay takes them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import BigInteger

from channels import envelope
from channels.brokers.base import Broker, BrokerUnavailable
from channels.faults import log_failure
from channels.metrics import Metrics
from channels.outbox import Committed
from channels.protocol import encode

log = logging.getLogger("kuda.publisher")

BATCH = 500

_MARK = text("UPDATE events SET published = true WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger))
)


def to_message(item: Committed, published_at: float) -> tuple[str, bytes]:
    event = item.event
    if event is None:
        return item.channel, envelope.revoked(item.acl)
    payload = encode(event.to_frame())
    if event.seq is None:
        return item.channel, envelope.ephemeral(0, published_at, payload)
    return item.channel, envelope.durable(event.seq, item.acl, published_at, payload)


async def mark_published(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(_MARK, {"ids": ids})


class Publisher:
    """The outbox sink: `committed()` is called right after commit, from any session."""

    def __init__(
        self,
        broker: Broker,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
    ) -> None:
        self._broker = broker
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._queue: deque[Committed] = deque()
        self._wake = asyncio.Event()
        self._to_mark: list[int] = []
        self._mark_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def committed(self, items: list[Committed]) -> None:
        self._queue.extend(items)
        self._metrics.appended.inc(sum(1 for i in items if i.event and i.event.seq is not None))
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="kuda-publisher"),
            asyncio.create_task(self._mark_loop(), name="kuda-publish-marker"),
        ]

    async def stop(self) -> None:
        """Publish what is queued (bounded by the caller's timeout), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), 5)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush_marks()

    async def _drain(self) -> None:
        while self._queue:
            await self._publish_batch()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    await self._publish_batch()
                except Exception as exc:  # never let one bad batch stop publishing
                    log_failure(log, "publishing a batch failed; the relay will publish it", exc)

    async def _publish_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        now = time.time()
        try:
            await self._broker.publish([to_message(item, now) for item in batch])
        except BrokerUnavailable as exc:
            self._metrics.publish_failures.inc()
            log.warning(
                "broker refused %d events (%s); the relay will publish them", len(batch), exc
            )
            return
        ids = [item.event_id for item in batch if item.event_id is not None]
        self._metrics.published.inc(len(ids))
        if ids:
            self._to_mark.extend(ids)
            self._mark_wake.set()

    async def _mark_loop(self) -> None:
        while True:
            await self._mark_wake.wait()
            self._mark_wake.clear()
            await asyncio.sleep(0.02)  # let a burst accumulate into one UPDATE
            try:
                await self._flush_marks()
            except Exception as exc:
                log_failure(log, "could not mark events published; the relay may repeat them", exc)

    async def _flush_marks(self) -> None:
        ids, self._to_mark = self._to_mark, []
        if not ids:
            return
        async with self._sessionmaker() as session:
            await mark_published(session, ids)
            await session.commit()
