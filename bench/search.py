"""Search benchmark: 100,000 rides, 50 concurrent clients, server-side latency percentiles.

    .venv/bin/python bench/search.py [--rides 100000] [--clients 50] [--seconds 20]
        [--copies 10] [--extra-places 20000] [--no-trgm]

Creates a throwaway database, seeds it with `kuda seed`, starts one `kuda serve`, prints
EXPLAIN ANALYZE of the app's own SQL for the main query shapes, then runs a mix of realistic
searches twice, side by side: "closed" (each client sends its next search as soon as the last
answers: saturation) and "paced" (each client pauses an exponentially distributed time, mean
--think seconds, between searches: about what 50 people browsing do). Server-side figures come
from the `Server-Timing` header. Stops by itself and removes its database."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.migrate import upgrade
from tests.procs import Server, kuda_env

ADMIN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-" + "s" * 40
PLACES = ["Innopolis", "Kazan", "Kazan Airport", "Kazan Railway Station"]


KINDS = (
    "default",
    "route",
    "date window",
    "near origin, by price",
    "near destination",
    "rating",
    "route, nothing matches",
)


def queries(rng: random.Random, kind: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    if kind == 0:
        return {}
    if kind == 1:  # a route between two different places, the origin typed partially
        origin, destination = rng.sample(PLACES, 2)
        return {"origin": origin[:5].lower(), "destination": destination}
    if kind == 2:
        start = now + timedelta(days=rng.randrange(0, 14))
        end = start + timedelta(days=1)
        return {
            "departure_from": start.isoformat(),
            "departure_to": end.isoformat(),
            "min_seats": 2,
        }
    if kind == 3:
        return {"origin_near": "55.7523,48.7448", "origin_radius_km": 3, "sort": "price"}
    if kind == 4:
        return {"destination_near": "55.6062,49.2787", "destination_radius_km": 2, "max_price": 400}
    if kind == 5:
        return {"sort": "driver_rating", "min_driver_rating": 4}
    # Each place is common, but no ride goes from a place to itself: the planner, taking the two
    # substring filters as independent, walks the scheduled rides in departure order.
    return {"origin": "innop", "destination": "Innopolis"}


async def client(
    base: str, token: str, seed: int, until: float, think_s: float, out: list[tuple[int, float]]
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        if think_s:  # independent arrivals: random start, exponential pauses (Poisson)
            await asyncio.sleep(rng.uniform(0, think_s))
        while time.monotonic() < until:
            kind = rng.randrange(len(KINDS))
            r = await http.get("/api/v1/rides", params=queries(rng, kind))
            r.raise_for_status()
            out.append((kind, float(r.headers["server-timing"].split("dur=")[1])))
            if think_s:
                await asyncio.sleep(rng.expovariate(1 / think_s))


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


SHAPES: dict[str, dict[str, Any]] = {
    "default listing": {},
    "origin + destination substring": {"origin": "inno", "destination": "kazan airport"},
    "route, nothing matches": {"origin": "innop", "destination": "innopolis"},
    "near a point, by price": {"origin_near": (55.7523, 48.7448, 3), "sort": "price"},
    "by driver rating, min 4": {"sort": "driver_rating", "min_driver_rating": 4},
}


async def _explained(url: str) -> dict[str, str]:
    """The app's own SQL for the main query shapes (compiled with literal values), after the
    app's first step for typed places (matching them against ride_places), as it runs it."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from server.rides.search import PLACE_LOOKUPS, Near, RideQuery, build, like_pattern, places

    now = datetime.now(UTC)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    out: dict[str, str] = {}
    try:
        async with AsyncSession(engine) as session:
            for name, fields in SHAPES.items():
                near = fields.get("origin_near")
                values = {**fields, "origin_near": Near(*near) if near else None}
                q = RideQuery(**values)
                origins, destinations = await places(session, q)
                literal = {"literal_binds": True}
                if name == "route, nothing matches":  # the app's first step: place names
                    lookup = PLACE_LOOKUPS[True, True].bindparams(
                        origin=like_pattern("innop"), destination=like_pattern("innopolis"), cap=101
                    )
                    out["place lookup: innop, innopolis"] = str(
                        lookup.compile(dialect=dialect, compile_kwargs=literal)
                    )
                if name == "route, nothing matches":  # before D38: substring filters on rides
                    old = build(q, now).compile(dialect=dialect, compile_kwargs=literal)
                    out[f"{name}, as substring filters on rides (before D38)"] = str(old)
                if [] in (origins, destinations):
                    out[name] = (
                        f"-- no ride query: a place matched no name {origins} {destinations}"
                    )
                    continue
                stmt = build(q, now, origins, destinations)
                out[name] = str(stmt.compile(dialect=dialect, compile_kwargs=literal))
    finally:
        await engine.dispose()
    return out


async def explain(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for name, sql in (await _explained(url)).items():
            if sql.startswith("--"):
                print(f"\n-- {name}\n{sql}")
                continue
            plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
            print(f"\n-- {name}\n" + "\n".join(r[0] for r in plan))
    finally:
        await conn.close()


async def run(
    base: str, token: str, clients: int, seconds: float, think_s: float, label: str
) -> None:
    samples: list[tuple[int, float]] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(base, token, i, until, think_s, samples) for i in range(clients)))
    server_ms = [ms for _, ms in samples]
    p50, p95, p99 = (pct(server_ms, p) for p in (50, 95, 99))
    rate = len(server_ms) / seconds
    print(
        f"{label:<28} {len(server_ms):>7} {rate:>7.0f}/s  "
        f"p50 {p50:6.1f}  p95 {p95:6.1f}  p99 {p99:6.1f}"
    )
    for kind, name in enumerate(KINDS):
        mine = [ms for k, ms in samples if k == kind]
        if len(mine) > 1:
            p50, p95 = pct(mine, 50), pct(mine, 95)
            print(f"    {name:<24} {len(mine):>7}            p50 {p50:6.1f}  p95 {p95:6.1f}")


def seed(env: dict[str, str], rides: int, users: int) -> None:
    args = ["seed", "--rides", str(rides), "--users", str(users)]
    subprocess.run(
        [sys.executable, "-m", "server", *args], env=env, cwd=ROOT, check=True, capture_output=True
    )


TRIGRAM_INDEXES = ("ix_rides_origin_trgm", "ix_rides_destination_trgm", "ix_ride_places_trgm")
RIDE_COLUMNS = (
    "driver_id, kind, origin, destination, origin_lat, origin_lng, destination_lat, "
    "destination_lng, seats_total, seats_available, price, currency, notes, instant_booking, "
    "status, version, driver_rating"
)


async def drop_trigram_indexes(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for index in TRIGRAM_INDEXES:
            await conn.execute(f"DROP INDEX IF EXISTS {index}")
        print("trigram indexes dropped (--no-trgm): substring search as without pg_trgm")
    finally:
        await conn.close()


async def grow(url: str, copies: int, extra_places: int) -> None:
    if copies <= 1 and not extra_places:
        return
    conn = await asyncpg.connect(url)
    try:
        t = time.perf_counter()
        if copies > 1:  # each copy departs a few minutes later than its original
            await conn.execute(
                f"INSERT INTO rides ({RIDE_COLUMNS}, departure_at) "
                f"SELECT {RIDE_COLUMNS}, departure_at + c * interval '1 minute' "
                f"FROM rides, generate_series(1, {copies - 1}) AS c"
            )
        if extra_places:
            await conn.execute(
                "INSERT INTO ride_places (name) SELECT 'village ' || lpad(g::text, 8, '0') "
                f"FROM generate_series(1, {extra_places}) AS g ON CONFLICT DO NOTHING"
            )
        await conn.execute("ANALYZE")
        rides = await conn.fetchval("SELECT count(*) FROM rides")
        places = await conn.fetchval("SELECT count(*) FROM ride_places")
        print(f"grown to {rides} rides, {places} place names in {time.perf_counter() - t:.1f} s")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rides", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--think", type=float, default=1.0, help="paced run: mean pause, s")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="then copy the seeded rides in SQL until there are this many times as many "
        "(--rides 100000 --copies 10: 1,000,000 rides without seeding them one by one)",
    )
    parser.add_argument(
        "--extra-places",
        type=int,
        default=0,
        help="add this many distinct place names no ride uses (the place lookup's table size)",
    )
    parser.add_argument(
        "--no-trgm",
        action="store_true",
        help="drop the trigram indexes after migrating: a server without pg_trgm",
    )
    args = parser.parse_args()
    name = f"kuda_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    server = None
    try:
        await asyncio.to_thread(upgrade, url)
        if args.no_trgm:
            await drop_trigram_indexes(url)
        env = kuda_env(DATABASE_URL=url, JWT_SECRET=SECRET, LOG_LEVEL="warning",
                       PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="1024",
                       **dict(e.split("=", 1) for e in args.env))  # fmt: skip
        t = time.perf_counter()
        await asyncio.to_thread(seed, env, args.rides, args.users)
        print(f"seeded {args.rides} rides in {time.perf_counter() - t:.1f} s")
        await grow(url, args.copies, args.extra_places)
        await explain(url)
        server = Server(env, Path(tempfile.gettempdir()) / f"{name}.log")
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            login = {"username": "user0@demo.kuda.example", "password": "kuda-demo-password"}
            token = (await http.post("/api/v1/auth/token", data=login)).json()["access_token"]
            for i in range(60):  # warm up
                params = queries(random.Random(i), i % len(KINDS))
                await http.get(
                    "/api/v1/rides", params=params, headers={"Authorization": f"Bearer {token}"}
                )
        print(f"\n{args.clients} concurrent clients, {args.seconds:.0f} s each run; server-side ms")
        print(f"{'run':<28} {'searches':>7} {'rate':>9}")
        for think, label in (
            (0.0, "closed (saturation)"),
            (args.think, f"paced ({args.think} s think)"),
        ):
            await run(server.base_url, token, args.clients, args.seconds, think, label)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
