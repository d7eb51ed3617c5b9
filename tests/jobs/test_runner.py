"""The runner: every job each pass, a failing job logged and counted while the others go on,
full batches run again at once, nothing new while draining, and a clean stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from server.app import create_app
from server.config import Settings
from server.jobs import FixedClock, Job, JobRunner
from server.jobs.metrics import JobMetrics
from tests.helpers import signup
from tests.jobs.conftest import publish

AT = datetime(2030, 1, 1, tzinfo=UTC)


def _value(registry: CollectorRegistry, name: str, job: str) -> float:
    return registry.get_sample_value(name, {"job": job}) or 0.0


async def test_a_failing_job_is_counted_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[datetime] = []
    broken_fixed = False

    async def broken(now: datetime) -> int:
        if broken_fixed:
            return 1
        raise RuntimeError("boom")

    async def works(now: datetime) -> int:
        seen.append(now)
        return 3

    registry = CollectorRegistry()
    runner = JobRunner(
        [Job("broken", broken, 0, 10), Job("works", works, 0, 10)],
        interval_s=60,
        metrics=JobMetrics(registry),
        clock=FixedClock(AT),
    )
    with caplog.at_level(logging.INFO, logger="kuda.jobs"):
        assert await runner.tick() == 3
        assert await runner.tick() == 3
        broken_fixed = True
        assert await runner.tick() == 4
    assert seen == [AT, AT, AT]  # the injected time
    assert _value(registry, "kuda_job_failures_total", "broken") == 2
    assert _value(registry, "kuda_job_runs_total", "broken") == 3
    assert _value(registry, "kuda_job_items_total", "works") == 9
    assert _value(registry, "kuda_job_duration_seconds_count", "works") == 3
    assert caplog.text.count("job broken failed") == 1  # once per streak, not per run
    assert "job broken recovered" in caplog.text and "job works: 3 done" in caplog.text


async def test_a_full_batch_runs_again_until_one_is_not_full() -> None:
    left = [5, 5, 2]

    async def drain(now: datetime) -> int:
        return left.pop(0) if left else 0

    runner = JobRunner([Job("drain", drain, 0, 5)], interval_s=60, clock=FixedClock(AT))
    assert await runner.tick() == 12 and left == []


async def test_jobs_wait_for_their_period_and_nothing_runs_while_paused() -> None:
    calls: list[str] = []

    async def job(now: datetime) -> int:
        calls.append("ran")
        return 0

    paused = False
    runner = JobRunner(
        [Job("slow", job, 3600, 1)], interval_s=0.01, paused=lambda: paused, clock=FixedClock(AT)
    )
    await runner.tick()
    await runner.tick()  # not due again for an hour
    assert calls == ["ran"]
    paused = True
    fresh = JobRunner([Job("p", job, 0, 1)], interval_s=0.01, paused=lambda: paused)
    fresh.start()
    await asyncio.sleep(0.1)
    await fresh.stop()
    assert calls == ["ran"]


async def test_stop_lets_the_batch_in_flight_finish() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def job(now: datetime) -> int:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()
        return 1

    runner = JobRunner([Job("j", job, 0, 10)], interval_s=0.01)
    runner.start()
    await started.wait()
    await runner.stop()
    assert finished.is_set()


async def test_the_app_runs_its_jobs_by_itself(settings_factory: Callable[..., Settings]) -> None:
    """`kuda serve`'s lifespan starts the runner: a ride 30 minutes away gets its reminder
    without anybody calling the job."""
    app = create_app(settings_factory(jobs_interval_s=0.1))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kuda.test") as c:
            driver = await signup(c)
            await publish(c, driver, datetime.now(UTC) + timedelta(minutes=30))
            for _ in range(300):
                r = await c.get("/api/v1/notifications", headers=driver.headers)
                if r.json()["items"]:
                    break
                await asyncio.sleep(0.05)
            assert [n["kind"] for n in r.json()["items"]] == ["ride.reminder"]
            metrics = await c.get("/metrics")
    assert 'kuda_job_items_total{job="ride.reminder"} 1.0' in metrics.text
