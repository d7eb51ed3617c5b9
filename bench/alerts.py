"""Alert matching benchmark: the match query and POST /rides with 10,000 alerts and 10,000 rides,
against the same with no alert, side by side in one run.

    nice -n 10 .venv/bin/python bench/alerts.py [--alerts 10000] [--rides 10000] [--samples 200]

Creates a throwaway database, inserts `--rides` rides between ~40 places of Tatarstan (popular
routes more often, as in life: Zipf weights) and starts one `kuda serve`. Then, first with no
alert and again after inserting `--alerts` alerts (500 owners x 20, texts that are whole names,
lowered prefixes or fragments of them, half with a departure window, half with a price cap,
a quarter with a seat minimum):
- the match query (`server.alerts.matching.claim`, the app's own SQL, timed alone) on random
  stored rides, each in a transaction rolled back afterwards, so every sample finds its matches
  anew;
- `POST /api/v1/rides` (server-side time from `Server-Timing`) for new rides drawn like the
  stored ones; with alerts these commit their `ride.matched` notifications;
and, for scale, the same match done by scanning every alert with `strpos` (what D34 avoids), and
the worst case for the substring enumeration: a ride whose origin and destination are 200
characters long (20,100 substrings each). Stops by itself and removes its database."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from models import Ride
from server.alerts.matching import claim
from server.config import to_asyncpg_url
from server.migrate import upgrade
from tests.procs import Server, kuda_env

ADMIN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-" + "s" * 40
PLACES = (
    "Innopolis", "Kazan", "Kazan Airport", "Kazan Railway Station", "Verkhniy Uslon",
    "Zelenodolsk", "Naberezhnye Chelny", "Almetyevsk", "Nizhnekamsk", "Yelabuga", "Chistopol",
    "Bugulma", "Leninogorsk", "Arsk", "Laishevo", "Pestretsy", "Vysokaya Gora", "Kukmor",
    "Mamadysh", "Buinsk", "Tetyushi", "Bolgar", "Sviyazhsk", "Kamskoye Ustye", "Aznakayevo",
    "Zainsk", "Menzelinsk", "Agryz", "Sarmanovo", "Cheremshan", "Nurlat", "Baltasi",
    "Bogatye Saby", "Tyulyachi", "Rybnaya Sloboda", "Alekseyevskoye", "Apastovo", "Kaibitsy",
    "Drozhzhanoye", "Atnya",
)  # fmt: skip
WEIGHTS = [1 / (i + 1) for i in range(len(PLACES))]
STREETS = ("", "", ", Universitetskaya 1", ", Kremlin", ", bus station", ", centre", " (north)")
OWNERS = 500


def place(rng: random.Random) -> str:
    return rng.choices(PLACES, WEIGHTS)[0]


def ride_texts(rng: random.Random) -> tuple[str, str]:
    origin = place(rng)
    destination = place(rng)
    while destination == origin:
        destination = place(rng)
    return origin + rng.choice(STREETS), destination + rng.choice(STREETS)


def alert_text(rng: random.Random) -> str:
    name = place(rng)
    shape = rng.random()
    if shape < 0.5:
        return name
    if shape < 0.8:
        return name[: rng.randint(3, len(name))].lower()
    start = rng.randrange(0, max(1, len(name) - 3))
    return name[start : start + rng.randint(3, 8)]


def ride_row(rng: random.Random, driver_id: int, now: datetime) -> tuple[Any, ...]:
    origin, destination = ride_texts(rng)
    seats = rng.randint(1, 4)
    departure = now + timedelta(hours=rng.uniform(1, 24 * 30))
    price = rng.choice((None, 150, 250, 300, 450, 600))
    return (driver_id, origin, destination, departure, seats, rng.randint(0, seats), price)


def alert_row(rng: random.Random, user_id: int, now: datetime) -> tuple[Any, ...]:
    origin, destination = alert_text(rng), alert_text(rng)
    start = end = None
    if rng.random() < 0.5:
        start = now + timedelta(days=rng.uniform(0, 25))
        end = start + timedelta(days=rng.uniform(0.5, 5))
    max_price = rng.choice((200, 300, 500)) if rng.random() < 0.5 else None
    min_seats = rng.randint(1, 3) if rng.random() < 0.25 else None
    created = now - timedelta(days=1)  # before every stored ride: they all may match
    key = (origin.lower(), destination.lower())
    return (user_id, origin, destination, *key, start, end, max_price, min_seats, created)


async def seed_users(conn: asyncpg.Connection, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO users (email, password_hash, display_name) "
        "SELECT 'owner' || i || '@bench.invalid', '!', 'Owner ' || i "
        "FROM generate_series(1, $1) AS i RETURNING id",
        n,
    )
    return [r["id"] for r in rows]


async def seed_rides(conn: asyncpg.Connection, n: int, drivers: list[int]) -> None:
    rng, now = random.Random(1), datetime.now(UTC)
    rows = [ride_row(rng, rng.choice(drivers), now) for _ in range(n)]
    await conn.copy_records_to_table(
        "rides",
        records=rows,
        columns=["driver_id", "origin", "destination", "departure_at", "seats_total",
                 "seats_available", "price"],
    )  # fmt: skip


async def seed_alerts(conn: asyncpg.Connection, n: int, owners: list[int]) -> None:
    rng, now = random.Random(2), datetime.now(UTC)
    rows = [alert_row(rng, owners[i % len(owners)], now) for i in range(n)]
    await conn.copy_records_to_table(
        "alerts",
        records=rows,
        columns=["user_id", "origin", "destination", "origin_key", "destination_key",
                 "departure_from", "departure_to", "max_price", "min_seats", "created_at"],
    )  # fmt: skip
    await conn.execute("ANALYZE alerts")


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


async def timed(samples: int, step: Callable[[int], Awaitable[float | None]]) -> list[float]:
    out: list[float] = []
    for i in range(samples):
        t = time.perf_counter()
        server_ms = await step(i)
        out.append(server_ms if server_ms is not None else (time.perf_counter() - t) * 1000)
    return out


class Bench:
    def __init__(self, url: str, base: str, token: str, samples: int) -> None:
        self.engine = create_async_engine(to_asyncpg_url(url), pool_size=2)
        self.base, self.token, self.samples = base, token, samples
        self.matches: list[int] = []

    async def match_query(self, ride_ids: list[int]) -> list[float]:
        rng = random.Random(3)
        self.matches = []

        async def step(_: int) -> float:
            async with AsyncSession(self.engine) as session:
                ride = await session.get(Ride, rng.choice(ride_ids))
                assert ride is not None
                t = time.perf_counter()
                self.matches.append(len(await claim(session, ride)))
                ms = (time.perf_counter() - t) * 1000
                await session.rollback()
            return ms

        return await timed(self.samples, step)

    async def scan(self, conn: asyncpg.Connection, ride_ids: list[int]) -> list[float]:
        rng = random.Random(3)
        sql = """SELECT count(*) FROM rides r JOIN alerts a
                 ON strpos(lower(r.origin), a.origin_key) > 0
                AND strpos(lower(r.destination), a.destination_key) > 0 WHERE r.id = $1"""

        async def step(_: int) -> None:
            await conn.fetchval(sql, rng.choice(ride_ids))

        return await timed(max(20, self.samples // 10), step)

    async def post_rides(self, seed: int) -> list[float]:
        rng, now = random.Random(seed), datetime.now(UTC)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30) as http:

            async def step(_: int) -> float:
                _, origin, destination, departure, seats, _, price = ride_row(rng, 0, now)
                body = {"origin": origin, "destination": destination, "seats_total": seats,
                        "departure_at": departure.isoformat(), "price": price}  # fmt: skip
                r = await http.post("/api/v1/rides", json=body)
                r.raise_for_status()
                return float(r.headers["server-timing"].split("dur=")[1])

            for i in range(20):  # warm up
                await step(i)
            return await timed(self.samples, step)


def row(label: str, before: list[float], after: list[float]) -> str:
    cells = [f"{pct(v, p):8.2f}" for v in (before, after) for p in (50, 95)]
    return f"{label:<34}" + "".join(cells)


async def long_ride(conn: asyncpg.Connection, driver: int) -> int:
    now = datetime.now(UTC) + timedelta(days=1)
    rid: int = await conn.fetchval(
        "INSERT INTO rides (driver_id, origin, destination, departure_at, seats_total, "
        "seats_available) VALUES ($1, $2, $3, $4, 4, 4) RETURNING id",
        driver,
        ("Kazan Innopolis " * 20)[:200],
        ("Naberezhnye Chelny " * 20)[:200],
        now,
    )
    return rid


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--rides", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    name = f"kuda_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    server = None
    try:
        await asyncio.to_thread(upgrade, url)
        conn = await asyncpg.connect(url)
        owners = await seed_users(conn, OWNERS)
        await seed_rides(conn, args.rides, owners)
        await conn.execute("ANALYZE")
        ride_ids = [r["id"] for r in await conn.fetch("SELECT id FROM rides ORDER BY id")]
        env = kuda_env(DATABASE_URL=url, JWT_SECRET=SECRET, LOG_LEVEL="warning",
                       WRITE_RATE_PER_USER="0", PASSWORD_HASH_TIME_COST="1",
                       PASSWORD_HASH_MEMORY_KIB="1024")  # fmt: skip
        server = Server(env, Path(tempfile.gettempdir()) / f"{name}.log")
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            who = {"email": "driver@example.com", "password": "bench-password-1",
                   "display_name": "Driver"}  # fmt: skip
            (await http.post("/api/v1/auth/register", json=who)).raise_for_status()
            login = {"username": who["email"], "password": who["password"]}
            token = (await http.post("/api/v1/auth/token", data=login)).json()["access_token"]
        bench = Bench(url, server.base_url, token, args.samples)
        longest = await long_ride(conn, owners[0])

        empty = await bench.match_query(ride_ids)
        empty_long = await bench.match_query([longest])
        empty_post = await bench.post_rides(4)
        await seed_alerts(conn, args.alerts, owners)
        full = await bench.match_query(ride_ids)
        matched = bench.matches
        full_long = await bench.match_query([longest])
        full_post = await bench.post_rides(4)
        scan = await bench.scan(conn, ride_ids)
        notes = await conn.fetchval("SELECT count(*) FROM notifications")

        print(f"{args.rides} rides, alerts: 0 vs {args.alerts}; {args.samples} samples each; ms")
        print(f"{'':<34}{'0 alerts':>16}{f'{args.alerts} alerts':>16}")
        print(f"{'':<34}{'p50':>8}{'p95':>8}{'p50':>8}{'p95':>8}")
        print(row("match query (claim, rolled back)", empty, full))
        print(row("  ride with 200-char names", empty_long, full_long))
        print(row("POST /rides (server-side)", empty_post, full_post))
        print(
            f"matches per stored ride: mean {statistics.mean(matched):.1f}, "
            f"max {max(matched)}; notifications stored by the POSTs: {notes}"
        )
        print(f"scanning every alert with strpos instead: p50 {pct(scan, 50):.2f} ms, "
              f"p95 {pct(scan, 95):.2f} ms")  # fmt: skip
        plan = await conn.fetch(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) "
            + str(claim_sql()).replace(":ride_id", "$1"),
            ride_ids[0],
        )
        print("\n-- the match query's plan (one stored ride)\n" + "\n".join(r[0] for r in plan))
        await bench.engine.dispose()
        await conn.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def claim_sql() -> Any:
    from server.alerts.matching import _BY_ORIGIN

    return _BY_ORIGIN


if __name__ == "__main__":
    asyncio.run(main())
