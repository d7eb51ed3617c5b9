"""Lag-tolerant reads on a streaming replica (`DATABASE_READ_URL`), falling back to the primary.

Which reads may use it (docs/decisions.md D39): those whose answer may be a moment old without
anyone noticing more than that moment (search, the public review list), and REST replay, whose
page is checked against the primary's head before it is served (`accept`: a replica that has not
replayed the whole page yet is passed over). A NotFound from the replica is asked again of the
primary (the row may not have been replayed yet). Reads that fence a snapshot with `Kuda-Seq`
(server/snapshot.py), reads of the caller's own things and everything in a write transaction
stay on the primary.

A replica that is down, stalled, refusing connections while it recovers or out of pooled
connections is skipped for `DB_REPLICA_RETRY_S`, the primary answering meanwhile, so reads fail
(503) only when both are down. A statement the replica cancelled (a conflict with recovery, its
statement timeout) sends only that read to the primary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from channels.faults import broken_connection, transient
from server.db import open_session
from server.errors import NotFound

log = logging.getLogger("kuda.replica")

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]

# Outcomes counted in kuda_db_replica_reads_total.
SERVED = "replica"  # answered by the replica
BEHIND = "behind"  # the replica had not replayed what the answer needs: the primary answered
DOWN = "down"  # the replica failed (or was skipped after failing): the primary answered
OUTCOMES = (SERVED, BEHIND, DOWN)


class ReadReplica:
    """Runs a read on the replica when there is one and it is usable, else on the primary."""

    def __init__(
        self,
        primary: async_sessionmaker[AsyncSession],
        replica: async_sessionmaker[AsyncSession] | None = None,
        retry_s: float = 5.0,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self._retry_s = retry_s
        self._skip_until = 0.0
        self.counts = dict.fromkeys(OUTCOMES, 0)

    @property
    def configured(self) -> bool:
        return self._replica is not None

    async def run(self, work: Work[T], accept: Callable[[T], bool] | None = None) -> T:
        """`work` on the replica; on the primary instead when there is no replica, when it failed
        recently or fails now, or when `accept` says the replica's answer is not complete yet."""
        replica = self._replica
        if replica is None:
            return await self._on(self._primary, work)
        if time.monotonic() < self._skip_until:
            self.counts[DOWN] += 1
            return await self._on(self._primary, work)
        try:
            result = await self._on(replica, work)
        except NotFound:
            # Absent on the replica is no proof: the row may not have been replayed yet.
            self.counts[BEHIND] += 1
            return await self._on(self._primary, work)
        except Exception as exc:
            if not transient(exc):
                raise
            self.counts[DOWN] += 1
            if broken_connection(exc) or isinstance(exc, PoolTimeout):
                # Down, stalled or out of connections: skip it for a while. A statement it
                # cancelled (a conflict with recovery, its statement timeout) only sends this
                # read to the primary.
                self._skip_until = time.monotonic() + self._retry_s
                log.warning(
                    "read replica unavailable (%s: %s); reads use the primary for %.0f s",
                    type(exc).__name__,
                    exc,
                    self._retry_s,
                )
            return await self._on(self._primary, work)
        if accept is not None and not accept(result):
            self.counts[BEHIND] += 1
            return await self._on(self._primary, work)
        self.counts[SERVED] += 1
        return result

    @staticmethod
    async def _on(maker: async_sessionmaker[AsyncSession], work: Work[T]) -> T:
        async with open_session(maker) as session:
            return await work(session)


class ReplicaCollector(Collector):
    """`kuda_db_replica_reads_total{outcome}`: replica reads served, and those the primary answered
    because the replica was behind or down."""

    def __init__(self, reads: ReadReplica) -> None:
        self._reads = reads

    def collect(self) -> Iterable[Any]:
        family = CounterMetricFamily(
            "kuda_db_replica_reads",
            "Lag-tolerant reads by who answered: replica, or the primary (replica behind or down)",
            labels=["outcome"],
        )
        for outcome, n in self._reads.counts.items():
            family.add_metric([outcome], n)
        yield family


async def _reads(conn: HTTPConnection) -> ReadReplica:
    reads: ReadReplica = conn.app.state.reads
    return reads


ReadsDep = Annotated[ReadReplica, Depends(_reads)]
