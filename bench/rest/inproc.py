"""Kuda's routes and the minimal app's, called in ONE Python process through their ASGI apps
(no HTTP server, no sockets to the client), in interleaved rounds: CPU per request of what each
app does for a route, and the ratio of the medians.

    .venv/bin/python bench/rest/inproc.py [--rides 5000] [--requests 300] [--rounds 6]
        [--routes me,search,list,ride,create]

A complement to bench/rest/run.py, not a replacement: it leaves out uvicorn (HTTP parsing,
response writes), which both apps share, and because both apps take turns in one process on the
same cores, load from other processes moves both sides alike, so its ratios hold still on a busy
machine where `wrk` runs move by ±0.3. Requests are sent one at a time (no concurrency). A fresh
database (migrated, `kuda seed --rides N`) on TEST_DATABASE_URL and the shared Redis
(TEST_REDIS_URL) with a prefix of its own; the minimal app is bench/rest/minimal_app.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import argparse
import asyncio
import os
import secrets
import subprocess
import time
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from server import migrate
from tests import services

PASSWORD = "kuda-demo-password"  # noqa: S105 - `kuda seed`'s demo users


async def call(
    app: Any, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> int:
    """One request straight into the ASGI app; its status."""
    raw, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw,
        "raw_path": raw.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


def median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


async def main(args: argparse.Namespace) -> int:
    db_name, db_url = await services.create_database("kuda_bench_inproc")
    prefix = f"kuda-bench-inproc-{secrets.token_hex(4)}:"
    os.environ.update(
        DATABASE_URL=db_url,
        REDIS_URL=services.REDIS_URL,
        REDIS_PREFIX=prefix,
        JWT_SECRET=secrets.token_urlsafe(36),
        LOG_LEVEL="warning",
        WRITE_RATE_PER_USER="0",
        PASSWORD_HASH_TIME_COST="1",
        PASSWORD_HASH_MEMORY_KIB="1024",
    )
    try:
        await asyncio.to_thread(migrate.upgrade, db_url)
        print(f"-- seeding {args.rides:,} rides", file=sys.stderr)
        seed = [sys.executable, "-m", "server", "seed", "--rides", str(args.rides)]
        seed += ["--users", "500"]
        await asyncio.to_thread(subprocess.run, seed, cwd=REPO, check=True, capture_output=True)
        import minimal_app  # reads the environment set above
        from run import routes  # bench/rest/run.py: the same routes and bodies

        from server.app import create_app

        kuda = create_app()
        async with LifespanManager(kuda) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://k") as http:
                login = {"username": "user0@demo.kuda.example", "password": PASSWORD}
                token = (await http.post("/api/v1/auth/token", data=login)).json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                ride_id = (await http.get("/api/v1/rides", headers=auth)).json()["items"][0]["id"]
            apps = {"kuda": manager.app, "minimal": minimal_app.app}
            table = routes(int(ride_id))
            print(
                f"`bench/rest/inproc.py --rides {args.rides} --requests {args.requests} "
                f"--rounds {args.rounds}`; load average before: "
                + " ".join(f"{x:.2f}" for x in os.getloadavg())
                + "\n\n| route | Kuda CPU/request (ms, median) | minimal app (ms, median) "
                "| Kuda ÷ minimal | statuses |\n|---|---|---|---|---|"
            )
            for key in args.route_list:
                route = table[key]
                body = route.body.encode()
                headers = [(b"host", b"k"), (b"authorization", f"Bearer {token}".encode())]
                if body:
                    headers += [(b"content-type", b"application/json")]
                    headers += [(b"content-length", str(len(body)).encode())]
                cpu: dict[str, list[float]] = {name: [] for name in apps}
                statuses: dict[str, set[int]] = {name: set() for name in apps}
                for app in apps.values():  # warm up
                    for _ in range(30):
                        await call(app, route.method, route.path, body, headers)
                for _ in range(args.rounds):
                    for name, app in apps.items():
                        started = time.process_time()
                        for _ in range(args.requests):
                            status = await call(app, route.method, route.path, body, headers)
                            statuses[name].add(status)
                        cpu[name].append((time.process_time() - started) * 1000 / args.requests)
                k, m = median(cpu["kuda"]), median(cpu["minimal"])
                codes = " / ".join(",".join(map(str, sorted(statuses[n]))) for n in apps)
                print(
                    f"| {route.method} {route.path} | {k:.2f} | {m:.2f} | **{k / m:.2f}x** "
                    f"| {codes} |",
                    flush=True,
                )
            await minimal_app.engine.dispose()
            await minimal_app.redis.aclose()
    finally:
        await services.drop_database(db_name)
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rides", type=int, default=5000)
    p.add_argument("--requests", type=int, default=300, help="per app per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--routes", default="me,search,list,ride,create")
    args = p.parse_args()
    args.route_list = [r.strip() for r in args.routes.split(",") if r.strip()]
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
