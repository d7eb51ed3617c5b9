"""Retention trims the event log without a new lock order: a batch locks its channels' counters
sorted by name, as appends to several channels do (docs/decisions.md D33, D35), so it can never
hold a later counter while waiting for an earlier one."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import events
from tests.faults.kuda import wait_until

CHANNELS = [f"user:{i}" for i in range(10, 30)]  # sorted: user:10 is locked first


async def _old_events(pg: asyncpg.Connection) -> None:
    for channel in reversed(CHANNELS):  # stored in the other order
        await pg.execute("INSERT INTO channel_seqs (channel, seq) VALUES ($1, 3)", channel)
        for seq in (1, 2, 3):
            await pg.execute(
                "INSERT INTO events (channel, seq, event, data, created_at, published) "
                "VALUES ($1, $2, 'x', '{}', now() - make_interval(days => $3), true)",
                channel, seq, 10 - seq if seq < 3 else 0,
            )  # fmt: skip


async def test_a_trim_waiting_for_one_counter_holds_none_after_it(
    maker: async_sessionmaker[AsyncSession], pg: asyncpg.Connection, db: str
) -> None:
    await _old_events(pg)
    holder = await asyncpg.connect(db)
    other = await asyncpg.connect(db)
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM channel_seqs WHERE channel = 'user:10' FOR UPDATE")
        holder_pid = await holder.fetchval("SELECT pg_backend_pid()")

        async def trim() -> int:
            async with maker() as session, session.begin():
                return await events.trim(session, keep_s=3600)

        task = asyncio.create_task(trim())

        async def blocked() -> bool:
            return bool(
                await pg.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    holder_pid,
                )
            )

        await wait_until(blocked, 30, "the trim waiting on user:10")
        async with other.transaction():  # the others are free: the trim took none of them first
            await other.execute(
                "SELECT 1 FROM channel_seqs WHERE channel = ANY($1::text[]) FOR UPDATE NOWAIT",
                CHANNELS[1:],
            )
        await hold.rollback()
        assert await task == 2 * len(CHANNELS)  # seqs 1 and 2 of each channel; seq 3 is new
    finally:
        await holder.close()
        await other.close()
    rows = await pg.fetch("SELECT channel, trimmed_seq FROM channel_seqs ORDER BY channel")
    assert [(r["channel"], r["trimmed_seq"]) for r in rows] == [(c, 2) for c in CHANNELS]
    left = await pg.fetch("SELECT channel, seq FROM events ORDER BY channel, seq")
    assert [(r["channel"], r["seq"]) for r in left] == [(c, 3) for c in CHANNELS]
