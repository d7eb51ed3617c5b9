"""Kuda's REST routes against a minimal FastAPI + SQLAlchemy app doing the same work, with `wrk`,
in one run: server CPU per request (from /proc), requests/s, non-2xx answers.

    .venv/bin/python bench/rest/run.py [--rides 20000] [--seconds 10] [--connections 32]
        [--repeat 2] [--routes me,search,list,ride,create] [--flame docs/flame] [--write FILE]

A fresh database (migrated, `kuda seed --rides N`), one `kuda serve` and one minimal app
(bench/rest/minimal_app.py under uvicorn, same event loop and HTTP parser) on it and on the
shared Redis; the same user's token for both (same JWT secret). Each route is run against
Kuda, then the minimal app, `--repeat` times (interleaved). `--flame DIR` also records a py-spy
flame graph of Kuda for each route (an extra run, not counted). `wrk` is Debian's package.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from kuda.loadtest import procstat
from kuda.loadtest.report import machine
from server import migrate
from tests import services
from tests.procs import free_port

REDIS_URL = services.REDIS_URL
PASSWORD = "bench-password-42"  # noqa: S105


@dataclass(frozen=True)
class Route:
    key: str
    method: str
    path: str
    body: str = ""


def routes(ride_id: int) -> dict[str, Route]:
    departure = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    body = (
        '{"origin":"Innopolis","destination":"Kazan",'
        f'"departure_at":"{departure}","seats_total":3,"price":250}}'
    )
    return {
        "me": Route("me", "GET", "/api/v1/users/me"),
        "search": Route("search", "GET", "/api/v1/rides?origin=innop&destination=Kazan"),
        "list": Route("list", "GET", "/api/v1/rides"),
        "ride": Route("ride", "GET", f"/api/v1/rides/{ride_id}"),
        "create": Route("create", "POST", "/api/v1/rides", body),
    }


@dataclass
class Measure:
    app: str
    route: str
    run: int
    requests: int = 0
    rps: float = 0.0
    cpu_ms: float = float("nan")
    non2xx: int = 0
    p99_ms: float = float("nan")


def lua(route: Route, token: str, path: Path) -> Path:
    script = path / f"{route.key}.lua"
    body = route.body.replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        f'wrk.method = "{route.method}"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        + (
            f'wrk.headers["Content-Type"] = "application/json"\nwrk.body = "{body}"\n'
            if body
            else ""
        )
    )
    return script


def run_wrk(
    base: str, route: Route, script: Path, seconds: float, connections: int
) -> tuple[int, float, int, float]:
    wrk = shutil.which("wrk")
    url = base + route.path
    if wrk is None:
        raise SystemExit("bench/rest/run.py needs wrk: apt-get install wrk")
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float("nan")
    if p99:
        p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return requests, rps, int(non.group(1)) if non else 0, p99_ms


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"{base} exited")
            try:
                if (await http.get(base + "/openapi.json")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(base)


async def main(args: argparse.Namespace) -> int:
    db_name, db_url = await services.create_database("kuda_bench_rest")
    prefix = f"kuda-bench-rest-{secrets.token_hex(4)}:"
    secret = secrets.token_urlsafe(36)
    tmp = Path(tempfile.mkdtemp(prefix="kuda-rest-"))
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix)
    env.update(JWT_SECRET=secret, LOG_LEVEL="warning", WRITE_RATE_PER_USER="0")
    env.update(PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="1024")
    env["PYTHONPATH"] = str(REPO)
    try:
        await asyncio.to_thread(migrate.upgrade, db_url)
        print(f"-- seeding {args.rides:,} rides", file=sys.stderr)
        seed = [
            sys.executable,
            "-m",
            "server",
            "seed",
            "--rides",
            str(args.rides),
            "--users",
            "500",
        ]
        await asyncio.to_thread(
            subprocess.run, seed, env=env, cwd=REPO, check=True, capture_output=True
        )
        kuda_port, mini_port = free_port(), free_port()
        kuda = [sys.executable, "-m", "server", "serve", "--port", str(kuda_port)]
        procs.append(spawn(kuda, env, tmp / "kuda.log"))
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "minimal_app:app"]
        uvicorn += ["--port", str(mini_port), "--log-level", "warning", "--no-access-log"]
        procs.append(spawn(uvicorn, env, tmp / "minimal.log"))
        apps = {"kuda": f"http://127.0.0.1:{kuda_port}"}
        apps["minimal"] = f"http://127.0.0.1:{mini_port}"
        for (_name, base), proc in zip(apps.items(), procs, strict=True):
            await wait_ready(base, proc)
        pids = {"kuda": procs[0].pid, "minimal": procs[1].pid}
        async with httpx.AsyncClient(base_url=apps["kuda"], timeout=30) as http:
            email = f"bench-{secrets.token_hex(4)}@example.com"
            body = {"email": email, "password": PASSWORD, "display_name": "Bench"}
            (await http.post("/api/v1/auth/register", json=body)).raise_for_status()
            form = {"username": email, "password": PASSWORD}
            token = (await http.post("/api/v1/auth/token", data=form)).json()["access_token"]
            page = (
                await http.get("/api/v1/rides", headers={"Authorization": f"Bearer {token}"})
            ).json()
        table = routes(int(page["items"][0]["id"]))
        chosen = [table[k] for k in args.route_list]
        results: list[Measure] = []
        for route in chosen:
            script = lua(route, token, tmp)
            for app in ("kuda", "minimal"):  # warm up both
                await asyncio.to_thread(run_wrk, apps[app], route, script, 2, args.connections)
            for run in range(1, args.repeat + 1):
                for app in ("kuda", "minimal"):
                    group = procstat.Group(app, [pids[app]])
                    c0 = group.sample().cpu_s
                    req, rps, non, p99 = await asyncio.to_thread(
                        run_wrk, apps[app], route, script, args.seconds, args.connections
                    )
                    cpu = group.sample().cpu_s - c0
                    m = Measure(app, route.key, run, req, rps, 1000 * cpu / max(1, req), non, p99)
                    print(f"   {m}", file=sys.stderr)
                    results.append(m)
            if args.flame is not None:
                await flame(args, route, script, apps["kuda"], pids["kuda"])
        text = render(args, results, chosen)
        print(text)
        if args.write is not None:
            write_section(args.write, text)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        await services.drop_database(db_name)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def record(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def flame(args: argparse.Namespace, route: Route, script: Path, base: str, pid: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.flame.mkdir(parents=True, exist_ok=True)
    fmt, ext = ("raw", "txt") if args.flame_raw else ("flamegraph", "svg")
    out = args.flame / f"rest-{route.key}.{ext}"
    cmd = [spy, "record", "--pid", str(pid), "--duration", f"{args.seconds:g}", "--rate", "250"]
    rec = record([*cmd, "--format", fmt, "--output", str(out), "--nonblocking"])
    await asyncio.sleep(0.5)
    await asyncio.to_thread(run_wrk, base, route, script, args.seconds, args.connections)
    await asyncio.to_thread(rec.wait, 60)
    print(f"   flame graph: {out}", file=sys.stderr)


def median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def render(args: argparse.Namespace, results: list[Measure], chosen: list[Route]) -> str:
    lines = [
        f"`bench/rest/run.py --rides {args.rides} --seconds {args.seconds:g} --connections "
        f"{args.connections} --repeat {args.repeat}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{machine()}; load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "",
        "| route | Kuda CPU/request (ms) | minimal app CPU/request (ms) | ratio (medians) "
        "| Kuda req/s | minimal req/s | Kuda p99 (ms) | minimal p99 (ms) "
        "| non-2xx (Kuda / minimal) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for route in chosen:
        k = [m for m in results if m.route == route.key and m.app == "kuda"]
        n = [m for m in results if m.route == route.key and m.app == "minimal"]
        ratio = median([m.cpu_ms for m in k]) / median([m.cpu_ms for m in n])

        def cells(ms: list[Measure], attr: str, fmt: str) -> str:
            return " / ".join(fmt.format(getattr(m, attr)) for m in ms)

        lines.append(
            f"| {route.method} {route.path.split('?')[0]}"
            + (f"?{route.path.split('?')[1]}" if "?" in route.path else "")
            + f" | {cells(k, 'cpu_ms', '{:.2f}')} | {cells(n, 'cpu_ms', '{:.2f}')}"
            + f" | **{ratio:.2f}x**"
            + f" | {cells(k, 'rps', '{:,.0f}')} | {cells(n, 'rps', '{:,.0f}')}"
            + f" | {cells(k, 'p99_ms', '{:.1f}')} | {cells(n, 'p99_ms', '{:.1f}')}"
            + f" | {sum(m.non2xx for m in k)} / {sum(m.non2xx for m in n)} |"
        )
    return "\n".join(lines)


BEGIN, END = "<!-- rest:begin -->", "<!-- rest:end -->"


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rides", type=int, default=20000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--routes", default="me,search,list,ride,create")
    p.add_argument("--flame", type=Path, help="write py-spy flame graphs of Kuda here")
    p.add_argument("--flame-raw", action="store_true", help="collapsed stacks instead of SVG")
    p.add_argument("--write", type=Path, help="replace the REST section of this Markdown file")
    args = p.parse_args()
    args.route_list = [r.strip() for r in args.routes.split(",") if r.strip()]
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
