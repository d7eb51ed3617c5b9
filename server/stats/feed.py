"""The live `stats` channel: the statistics object pushed to this instance's admin subscribers
at most once a second, only when it changed (channels/feed.py does the pacing)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import Realtime
from channels.faults import transient
from channels.feed import StateFeed
from server import channel_names
from server.stats import service

log = logging.getLogger("kuda.stats")

EVENT = "stats"
INTERVAL_S = 1.0


def create_feed(
    realtime: Realtime, read_sessionmaker: async_sessionmaker[AsyncSession]
) -> StateFeed:
    async def produce() -> dict[str, Any] | None:
        try:
            async with read_sessionmaker() as session:
                return await service.current(session, realtime.roster)
        except service.StatsUnavailable as exc:
            log.info("stats not pushed: %s", exc.message)
        except Exception as exc:
            if not transient(exc):
                raise
            log.info("stats not pushed: the database is unavailable (%s)", type(exc).__name__)
        return None

    return StateFeed(realtime.hub, channel_names.STATS, EVENT, produce, interval_s=INTERVAL_S)
