"""Does a year of old events slow down appends? (docs/scaling.md, "The event log")

    nice -n 10 .venv/bin/python bench/event_log.py [--old 2000000] [--appends 4000] [--workers 4]

Starts its own PostgreSQL cluster (tests/pg_server.py, a port in 21500-21599, fsync on: a commit
pays its WAL flush as in production) and migrates it. Then, twice, the same workload: `--workers`
connections each appending in turn to 1,000 channels, one transaction per event, with the statement
Kuda runs (channels/events.py `_APPEND`: the channel's counter row and the event row). Round 1 on
an empty log; round 2 after `--old` events spread over the past 365 days on 100,000 other
channels (bulk-loaded, VACUUM ANALYZEd). Each round is run 3 times and the median run reported:
appends per second, the latency of one append transaction (p50, p99: commit and client included)
and the append statement's mean time inside PostgreSQL (pg_stat_statements: what an index that
grows with the log would slow down, without the WAL flush and the shared machine's scheduling
noise). Also reported: the size
of the table and its indexes, and the time to replay the last 100 events of a channel with a long
history (the replay query). Stops by itself and removes its cluster."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from channels.events import _APPEND, _REPLAY
from server.migrate import upgrade
from tests.pg_server import PostgresServer
from tests.procs import free_port

CHANNELS = 1000
OLD_CHANNELS = 100_000
DATA = '{"id": 17, "origin": "Innopolis", "destination": "Kazan", "price": 200, "seats": 3}'

LOAD = """
INSERT INTO events (channel, seq, event, data, acl_version, created_at, published)
SELECT 'ride:' || (g % $2), g / $2 + 1, 'ride.updated', $3::jsonb, 0,
       now() - interval '365 days' + (g::float8 / $1) * interval '364 days', true
FROM generate_series(0, $1 - 1) AS g
"""
LOAD_SEQS = """
INSERT INTO channel_seqs (channel, seq)
SELECT channel, max(seq) FROM events WHERE channel LIKE 'ride:%' GROUP BY channel
"""
STATEMENT_MS = """
SELECT sum(total_exec_time) / sum(calls) FROM pg_stat_statements
WHERE query LIKE '%INSERT INTO events%' AND query NOT LIKE '%generate_series%'
"""
SIZES = """
SELECT pg_size_pretty(pg_relation_size('events')) AS heap,
       pg_size_pretty(pg_indexes_size('events')) AS indexes,
       (SELECT count(*) FROM events) AS rows
"""


async def _worker(url: str, prefix: str, n: int, latencies: list[float]) -> None:
    conn = await asyncpg.connect(url)
    try:
        append = await conn.prepare(_APPEND.text.replace(":channel", "$1").replace(":event", "$2")
                                    .replace(":data", "$3::jsonb"))  # fmt: skip
        for _ in range(n):
            channel = f"{prefix}:{random.randrange(CHANNELS)}"
            started = time.perf_counter()
            async with conn.transaction():
                await append.fetchrow(channel, "ride.updated", DATA)
            latencies.append(time.perf_counter() - started)
    finally:
        await conn.close()


async def _round(url: str, prefix: str, appends: int, workers: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_worker(url, prefix, appends // workers, latencies) for _ in range(workers))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return len(latencies) / elapsed, p50, p99


async def _measure(url: str, label: str, appends: int, workers: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
        runs = [await _round(url, f"{label}{run}", appends, workers) for run in range(3)]
        server_ms = await conn.fetchval(STATEMENT_MS)
    finally:
        await conn.close()
    rate, p50, p99 = sorted(runs)[1]
    print(f"  appends/s {rate:8.0f}   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
          f"(3 runs: {', '.join(f'{r:.0f}/s' for r, _, _ in runs)})")  # fmt: skip
    print(f"  the append statement inside PostgreSQL (pg_stat_statements): {server_ms:.3f} ms mean")


async def _sizes(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(SIZES)
        print(f"  events: {row['rows']:,} rows, heap {row['heap']}, indexes {row['indexes']}")
    finally:
        await conn.close()


async def _replay_ms(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        sql = (_REPLAY.text.replace(":channel", "$1").replace(":since", "$2")
               .replace(":until", "$3").replace(":limit", "$4"))  # fmt: skip
        head = await conn.fetchval("SELECT seq FROM channel_seqs WHERE channel = 'ride:17'")
        times = []
        for _ in range(50):
            started = time.perf_counter()
            rows = await conn.fetch(sql, "ride:17", head - 100, head, 100)
            times.append(time.perf_counter() - started)
            assert len(rows) == min(100, head)
        return statistics.median(times) * 1000
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    server = PostgresServer(port=free_port(21500, 21599)).init()
    try:
        server.start("fsync=on", "full_page_writes=on", "shared_buffers=128MB",
                     "shared_preload_libraries=pg_stat_statements")  # fmt: skip
        admin = await asyncpg.connect(server.admin_url)
        await admin.execute("CREATE DATABASE kuda")
        await admin.close()
        url = server.url("kuda")
        await asyncio.to_thread(upgrade, url)
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE EXTENSION pg_stat_statements")
        await conn.close()
        print(f"PostgreSQL {server.port} (fsync on, shared_buffers 128MB); {args.workers} "
              f"workers, {args.appends} appends per run, {CHANNELS} channels")  # fmt: skip

        print("round 1: empty event log")
        await _measure(url, "live", args.appends, args.workers)

        started = time.perf_counter()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(LOAD, args.old, OLD_CHANNELS, DATA)
            await conn.execute(LOAD_SEQS)
            await conn.execute("VACUUM ANALYZE events")
            await conn.execute("VACUUM ANALYZE channel_seqs")
        finally:
            await conn.close()
        print(f"loaded {args.old:,} old events in {time.perf_counter() - started:.0f} s")
        await _sizes(url)

        print(f"round 2: {args.old:,} old events")
        await _measure(url, "next", args.appends, args.workers)
        print(f"replay of the last 100 events of a channel: {await _replay_ms(url):.2f} ms median")
    finally:
        server.destroy()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=2_000_000, help="old events loaded")
    parser.add_argument("--appends", type=int, default=4000, help="appends per run")
    parser.add_argument("--workers", type=int, default=4, help="concurrent connections")
    asyncio.run(main(parser.parse_args()))
