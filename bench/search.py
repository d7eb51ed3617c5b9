"""Search benchmark: 100,000 rides, 50 concurrent clients, server-side latency percentiles.

    .venv/bin/python bench/search.py [--rides 100000] [--clients 50] [--seconds 20]

Creates a throwaway database, seeds it with `kuda seed`, starts one `kuda serve`, runs a mix of
realistic searches for a fixed time and prints server-side p50/p95/p99 (from the
`Server-Timing` header) and client-side figures, then EXPLAIN ANALYZE of the main query shapes.
Stops by itself and removes its database."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.migrate import upgrade  # noqa: E402
from tests.procs import Server, kuda_env  # noqa: E402

ADMIN = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-" + "s" * 40
PLACES = ["Innopolis", "Kazan", "Kazan Airport", "Kazan Railway Station"]


def queries(rng: random.Random) -> dict[str, Any]:
    now = datetime.now(UTC)
    kind = rng.randrange(6)
    if kind == 0:
        return {}
    if kind == 1:
        return {"origin": rng.choice(PLACES)[:5].lower(), "destination": rng.choice(PLACES)}
    if kind == 2:
        start = now + timedelta(days=rng.randrange(0, 14))
        return {
            "departure_from": start.isoformat(),
            "departure_to": (start + timedelta(days=1)).isoformat(),
            "min_seats": 2,
        }
    if kind == 3:
        return {"origin_near": "55.7523,48.7448", "origin_radius_km": 3, "sort": "price"}
    if kind == 4:
        return {"destination_near": "55.6062,49.2787", "destination_radius_km": 2, "max_price": 400}
    return {"sort": "driver_rating", "min_driver_rating": 4}


async def client(
    base: str, token: str, seed: int, until: float, out: list[float], wall: list[float]
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        while time.monotonic() < until:
            t = time.perf_counter()
            r = await http.get("/api/v1/rides", params=queries(rng))
            wall.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            out.append(float(r.headers["server-timing"].split("dur=")[1]))


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def _explained() -> dict[str, str]:
    """The app's own SQL for the main query shapes (compiled with literal values)."""
    from sqlalchemy.dialects import postgresql

    from server.rides.search import Near, RideQuery, build

    shapes = {
        "default listing": RideQuery(),
        "origin + destination substring": RideQuery(origin="inno", destination="kazan airport"),
        "near a point, by price": RideQuery(origin_near=Near(55.7523, 48.7448, 3), sort="price"),
        "by driver rating, min 4": RideQuery(sort="driver_rating", min_driver_rating=4),
    }
    now = datetime.now(UTC)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return {
        name: str(build(q, now).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        for name, q in shapes.items()
    }


async def explain(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
        for name, sql in _explained().items():
            plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
            print(f"\n-- {name}\n" + "\n".join(r[0] for r in plan))
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rides", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    name = f"kuda_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    server = None
    try:
        await asyncio.to_thread(upgrade, url)
        env = kuda_env(DATABASE_URL=url, JWT_SECRET=SECRET, LOG_LEVEL="warning",
                       PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="1024")  # fmt: skip
        t = time.perf_counter()
        seed = ["seed", "--rides", str(args.rides), "--users", str(args.users)]
        subprocess.run(
            [sys.executable, "-m", "server", *seed],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        print(f"seeded {args.rides} rides in {time.perf_counter() - t:.1f} s")
        await explain(url)
        server = Server(env, Path("/tmp") / f"{name}.log")
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            r = await http.post(
                "/api/v1/auth/token",
                data={"username": "user0@demo.kuda.example", "password": "kuda-demo-password"},
            )
            token = r.json()["access_token"]
        server_ms: list[float] = []
        wall_ms: list[float] = []
        until = time.monotonic() + args.seconds
        await asyncio.gather(
            *(
                client(server.base_url, token, i, until, server_ms, wall_ms)
                for i in range(args.clients)
            )
        )
        print(f"\n{len(server_ms)} searches by {args.clients} concurrent clients in {args.seconds:.0f} s "
              f"({len(server_ms) / args.seconds:.0f}/s)")  # fmt: skip
        print(
            f"server-side ms: p50 {pct(server_ms, 50):.1f}  p95 {pct(server_ms, 95):.1f}  p99 {pct(server_ms, 99):.1f}"
        )
        print(
            f"client-side ms: p50 {pct(wall_ms, 50):.1f}  p95 {pct(wall_ms, 95):.1f}  p99 {pct(wall_ms, 99):.1f}"
        )
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
