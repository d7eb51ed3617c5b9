"""What `GET /api/v1/admin/stats` costs in PostgreSQL (docs/benchmarks.md, "Live statistics").

Creates a throwaway database, migrates it, inserts `--rows` rides, bookings and messages with
`created_at` spread evenly over `--days` days ending now (0: over today so far, every row is
today's, the worst case), ANALYZEs, prints the plans of the app's own queries
(server/stats/repository.py) and the median and p95 time of `day_counts` over `--runs` calls.

    .venv/bin/python bench/stats_counts.py --rows 100000 --days 0
    .venv/bin/python bench/stats_counts.py --rows 100000 --days 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import migrate
from server.config import to_asyncpg_url
from server.stats import repository
from server.stats.service import utc_day
from tests import services

SEED = """
INSERT INTO users (email, password_hash, display_name) VALUES ('bench@example.com', 'x', 'Bench');
INSERT INTO rides (driver_id, origin, destination, departure_at, seats_total, seats_available,
                   created_at)
  SELECT 1, 'Town ' || (i % 50), 'City ' || (i % 7), now() + interval '1 day', 8, 8,
         now() - ($2::float8 * 86400 * i / $1) * interval '1 second'
  FROM generate_series(1, $1) AS i;
INSERT INTO bookings (ride_id, passenger_id, seats, status, created_at)
  SELECT i, 1, 1 + i % 3, (ARRAY['pending', 'confirmed', 'rejected', 'cancelled'])[1 + i % 4],
         now() - ($2::float8 * 86400 * i / $1) * interval '1 second'
  FROM generate_series(1, $1) AS i;
INSERT INTO messages (ride_id, author_id, body, created_at)
  SELECT i, 1, 'hello', now() - ($2::float8 * 86400 * i / $1) * interval '1 second'
  FROM generate_series(1, $1) AS i;
"""


async def seed(url: str, rows: int, days: float) -> None:
    conn = await asyncpg.connect(url)
    try:
        start, end = utc_day()
        if days <= 0:  # today so far
            days = (await conn.fetchval("SELECT now()") - start).total_seconds() / 86400
        for statement in filter(str.strip, SEED.split(";")):
            args = [rows, days] if "$1" in statement else []
            await conn.execute(statement, *args)
        await conn.execute("VACUUM ANALYZE")
        for name, query in (("counts", repository._COUNTS), ("routes", repository._ROUTES)):
            sql = str(query).replace(":start", "$1").replace(":end", "$2")
            sql = sql.replace(":limit", str(repository.BUSIEST_ROUTES))
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS OFF) " + sql, start, end)
            print(f"--- {name}\n" + "\n".join(r[0] for r in plan))
    finally:
        await conn.close()


async def measure(url: str, runs: int) -> list[float]:
    engine = create_async_engine(to_asyncpg_url(url))
    maker = async_sessionmaker(engine)
    times = []
    try:
        for _ in range(runs):
            async with maker() as session:
                started = time.perf_counter()
                counts = await repository.day_counts(session, *utc_day())
                times.append((time.perf_counter() - started) * 1000)
        print(f"today: rides={counts.rides} seats={counts.seats} messages={counts.messages}")
    finally:
        await engine.dispose()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    name, url = await services.create_database("kuda_bench_stats")
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        await seed(url, args.rows, args.days)
        times = sorted(await measure(url, args.runs))
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"day_counts: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms")
    finally:
        await services.drop_database(name)


if __name__ == "__main__":
    asyncio.run(main())
