"""The jobs an instance runs, built from settings (the app's lifespan starts them)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.cache import Cache
from server.config import Settings
from server.jobs.autocomplete import complete_overdue
from server.jobs.clock import Clock
from server.jobs.housekeeping import Task, delete_batch, tasks
from server.jobs.metrics import JobMetrics
from server.jobs.reminders import send_due
from server.jobs.runner import Job, JobRunner

Maker = async_sessionmaker[AsyncSession]


def jobs(settings: Settings, sessionmaker: Maker, cache: Cache) -> list[Job]:
    """`ride.reminder` and `ride.autocomplete` every JOBS_INTERVAL_S, housekeeping every
    JOBS_HOUSEKEEPING_S."""
    batch, every = settings.jobs_batch, settings.jobs_interval_s
    found = [
        Job(
            "ride.reminder",
            partial(
                send_due,
                sessionmaker,
                lead_s=settings.reminder_lead_s,
                batch=batch,
            ),
            every,
            batch,
        ),
        Job(
            "ride.autocomplete",
            partial(
                complete_overdue,
                sessionmaker,
                cache,
                after_s=settings.ride_autocomplete_s,
                batch=batch,
            ),
            every,
            batch,
        ),
    ]
    for task in tasks(settings.access_token_ttl_s, settings.notification_retention_s):
        run = partial(_housekeep, sessionmaker, task, batch * 10)
        found.append(Job(task.name, run, settings.jobs_housekeeping_s, batch * 10))
    return found


async def _housekeep(maker: Maker, task: Task, batch: int, now: datetime) -> int:
    return await delete_batch(maker, task.statement, now - task.keep, batch)


def create_runner(
    settings: Settings,
    sessionmaker: Maker,
    cache: Cache,
    registry: CollectorRegistry | None,
    *,
    paused: Callable[[], bool] = lambda: False,
    clock: Clock | None = None,
) -> JobRunner:
    return JobRunner(
        jobs(settings, sessionmaker, cache),
        interval_s=settings.jobs_interval_s,
        metrics=JobMetrics(registry),
        clock=clock,
        paused=paused,
    )
