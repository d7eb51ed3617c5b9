"""The outbox relay: publishes committed events that were never published (the process died
between commit and publish, or the broker was down), and trims events past retention.

Every instance runs it; `FOR UPDATE SKIP LOCKED` splits the work, and hubs drop duplicates by
seq, so publishing an event twice is harmless."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import events
from channels.brokers.base import Broker, BrokerUnavailable
from channels.faults import log_failure
from channels.metrics import Metrics
from channels.outbox import Committed
from channels.publisher import mark_published, to_message
from channels.types import Event

log = logging.getLogger("kuda.relay")

_UNPUBLISHED = text(
    """
    SELECT id, channel, seq, event, data, acl_version, created_at FROM events
    WHERE NOT published AND created_at < now() - make_interval(secs => :grace_s)
    ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED
    """
)
_TRIM_LOCK = text("SELECT pg_try_advisory_xact_lock(7261001)")
TRIM_BATCH = 1000


class Relay:
    def __init__(
        self,
        broker: Broker,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        *,
        interval_s: float = 1.0,
        grace_s: float = 2.0,
        retention_s: float = 7 * 24 * 3600,
        trim_every_s: float = 600.0,
        batch: int = 500,
    ) -> None:
        self._broker = broker
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._retention_s = retention_s
        self._trim_every_s = trim_every_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._last_trim = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kuda-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                while await self.relay_once() == self._batch:
                    pass
                if time.monotonic() - self._last_trim >= self._trim_every_s:
                    await self.trim_once()
            except BrokerUnavailable as exc:
                log.info("relay waiting for the broker: %s", exc)
            except Exception as exc:
                log_failure(log, "relay pass failed", exc)

    async def relay_once(self) -> int:
        """Publish one batch of stale unpublished events; returns how many."""
        async with self._sessionmaker() as session, session.begin():
            params = {"grace_s": self._grace_s, "batch": self._batch}
            rows = (await session.execute(_UNPUBLISHED, params)).all()
            if not rows:
                return 0
            now = time.time()
            messages = [
                to_message(
                    Committed(
                        r.id,
                        Event(r.channel, r.event, r.data, r.created_at, int(r.seq)),
                        int(r.acl_version),
                        r.channel,
                    ),
                    now,
                )
                for r in rows
            ]
            await self._broker.publish(messages)
            await mark_published(session, [r.id for r in rows])
        self._metrics.relayed.inc(len(rows))
        log.info("relayed %d unpublished events", len(rows))
        return len(rows)

    async def trim_once(self) -> int:
        """Delete events past retention, a batch per transaction (each batch holds its
        channels' counters only briefly), one instance at a time; returns how many."""
        self._last_trim = time.monotonic()
        total = 0
        while True:
            async with self._sessionmaker() as session, session.begin():
                if not (await session.execute(_TRIM_LOCK)).scalar_one():
                    break
                n = await events.trim(session, self._retention_s, TRIM_BATCH)
            total += n
            if n < TRIM_BATCH:
                break
        if total:
            log.info("trimmed %d events past retention", total)
        return total
