"""The job runner every `kuda serve` instance runs: no leader, nothing to fail over.

Each job is a function that does one bounded batch of due work at a given `now` and returns how
much it did. Jobs claim their work in PostgreSQL (`FOR UPDATE SKIP LOCKED` on the rows, or a
unique row per delivery) and commit the claim with its effect, so instances running the same job
at once split the work, and an instance that dies mid-batch leaves its batch to the next run of
any instance (its transaction rolls back with its connection): nothing lost, nothing twice.

Guarantees of the runner itself:
- a failing job is counted every time and logged once per streak of failures (then once when
  it recovers), and the others (and its own next run) go on;
- a full batch means more is due: the job runs again at once, up to MAX_ROUNDS per pass;
- while the instance drains (`paused()`), no new batch starts; `stop()` lets the batch in
  flight finish (at most STOP_GRACE_S), then cancels it (an uncommitted batch rolls back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from channels.faults import log_failure
from server.jobs.clock import Clock, SystemClock
from server.jobs.metrics import JobMetrics

log = logging.getLogger("kuda.jobs")

MAX_ROUNDS = 50  # batches of one job per pass; the rest waits for the next pass
STOP_GRACE_S = 5.0

JobFn = Callable[[datetime], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Job:
    """`run(now)` does one batch of the work due at `now` and returns how many items it did;
    a result of `batch` or more means more may be due. Runs every `every_s` seconds."""

    name: str
    run: JobFn
    every_s: float
    batch: int


class JobRunner:
    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        interval_s: float,
        metrics: JobMetrics | None = None,
        clock: Clock | None = None,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.jobs = list(jobs)
        self._interval_s = interval_s
        self._metrics = metrics or JobMetrics()
        for job in self.jobs:  # every series exists (at 0) from the start, for rates and alerts
            for family in (self._metrics.runs, self._metrics.items, self._metrics.failures):
                family.labels(job.name)
        self._clock = clock or SystemClock()
        self._paused = paused
        self._next: dict[str, float] = {}  # job name -> monotonic time it is next due
        self._failing: set[str] = set()  # jobs whose last batch failed (logged once a streak)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="kuda-jobs")

    async def stop(self) -> None:
        """Stop after the batch in flight (rolled back if it does not end within the grace)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_S)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            if not self._paused():
                await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    async def tick(self) -> int:
        """Run every job that is due now; returns the items done."""
        done = 0
        for job in self.jobs:
            if self._stopping.is_set():
                break
            due_at = self._next.get(job.name, 0.0)
            if time.monotonic() < due_at:
                continue
            self._next[job.name] = time.monotonic() + job.every_s
            done += await self.run_job(job)
        return done

    async def run_job(self, job: Job) -> int:
        """Batches of `job` until one is not full (at most MAX_ROUNDS); never raises."""
        total = 0
        started = time.monotonic()
        for _ in range(MAX_ROUNDS):
            items = await self._batch(job)
            total += items
            if items < job.batch or self._stopping.is_set() or self._paused():
                break
        if total:
            log.info("job %s: %d done in %.3f s", job.name, total, time.monotonic() - started)
        return total

    async def _batch(self, job: Job) -> int:
        m = self._metrics
        started = time.monotonic()
        try:
            items = await job.run(self._clock.now())
        except Exception as exc:
            m.failures.labels(job.name).inc()
            if job.name not in self._failing:  # once per streak: an outage is not a log flood
                self._failing.add(job.name)
                log_failure(log, f"job {job.name} failed", exc)
            return 0
        finally:
            m.runs.labels(job.name).inc()
            m.duration.labels(job.name).observe(time.monotonic() - started)
        if job.name in self._failing:
            self._failing.discard(job.name)
            log.info("job %s recovered", job.name)
        m.items.labels(job.name).inc(items)
        return items
