"""Kuda and the peers a user would otherwise pick, side by side, in one sitting.

    .venv/bin/python bench/peers/run.py [--sockets 1000] [--events 300] [--rate 50]
        [--seconds 10] [--repeat 2] [--systems kuda,broadcaster,socketio,channels,ceiling]
        [--write docs/benchmarks.md] [--json out.json]

Each system runs two instances on the shared Redis (its own channel name, so other sessions'
traffic never mixes in), the same picows client processes hold `--sockets` sockets spread
round-robin over the two instances, and:

1. idle RSS per socket: growth of the two servers' RSS from before the sockets to 2 s after
   the last one is ready;
2. throughput: `--events` events published back to back; deliveries/s = sockets x events / the
   time from the first publish until every socket holds every event; server CPU per delivery;
3. latency: `--rate` events/s for `--seconds` s; p50/p99/max from publish to socket.

Peers publish straight into Redis (their own publisher, in their own venv, in their own
format); Kuda publishes through its REST API (PATCH /rides/{id}, a durable `ride.updated` on
`ride:{id}`: PostgreSQL commit -> outbox -> Redis -> sockets) with `kuda loadtest hot`. Every
socket's events are counted: lost, duplicated, out of order.

Each peer lives in bench/peers/<name>/ with its pinned requirements.txt; its virtual
environment (bench/peers/<name>/.venv) is created on first use. Runs are interleaved
(every system once, then again) so that drift on a shared machine hits all of them.
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
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kuda.loadtest import procstat
from kuda.loadtest.accounting import Histogram, Tally
from kuda.loadtest.pool import Pool
from kuda.loadtest.report import machine

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SETTLE_S = 2.0
PUBLISH_REDIS = [sys.executable, str(HERE / "publish_redis.py")]


@dataclass(frozen=True)
class Peer:
    key: str
    title: str
    server: list[str]  # {venv}, {port}, {dir} are filled in
    path: str
    protocol: str
    publisher: list[str]
    packages: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


UVICORN = [
    "{venv}/bin/python",
    "-m",
    "uvicorn",
    "--app-dir",
    "{dir}",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
]
UVICORN += ["--log-level", "warning", "--ws-per-message-deflate", "false"]
PEERS = {
    "broadcaster": Peer(
        "broadcaster",
        "FastAPI + broadcaster, the naive way",
        [*UVICORN, "server:app"],
        "/ws",
        "plain",
        PUBLISH_REDIS,
        ("fastapi", "uvicorn", "broadcaster", "redis", "websockets"),
    ),
    "socketio": Peer(
        "socketio",
        "python-socketio + AsyncRedisManager",
        [*UVICORN, "server:app"],
        "/socket.io/?EIO=4&transport=websocket",
        "socketio",
        ["{venv}/bin/python", "{dir}/publish.py"],
        ("python-socketio", "python-engineio", "uvicorn", "redis"),
    ),
    "channels": Peer(
        "channels",
        "Django Channels + channels_redis (pub/sub layer)",
        [*UVICORN, "peer.asgi:application"],
        "/ws",
        "plain",
        ["{venv}/bin/python", "{dir}/publish.py"],
        ("django", "channels", "channels-redis", "uvicorn", "redis"),
        {"PEER_LAYER": "pubsub"},
    ),
    "ceiling": Peer(
        "ceiling",
        "bare picows server, one pre-encoded frame per transport (ceiling)",
        ["{venv}/bin/python", "{dir}/server.py"],
        "/",
        "plain",
        PUBLISH_REDIS,
        ("picows", "uvloop", "redis"),
    ),
}


@dataclass
class Result:
    system: str
    run: int
    sockets: int = 0
    events: int = 0
    deliveries_per_s: float = float("nan")
    server_cpu_us: float = float("nan")
    publish_rate: float = float("nan")  # events published per second, back to back
    steady_cpu_us: float = float("nan")  # server CPU per delivery at the steady rate
    rss_per_socket_kib: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    lat_rate: float = float("nan")
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    dropped: int = 0
    failed: int = 0
    client_cpu_pct: float = float("nan")
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- environments


def venv_of(peer: Peer) -> Path:
    return HERE / peer.key / ".venv"


def ensure_venv(peer: Peer) -> None:
    venv = venv_of(peer)
    stamp = venv / ".installed"
    reqs = HERE / peer.key / "requirements.txt"
    if stamp.exists() and stamp.stat().st_mtime >= reqs.stat().st_mtime:
        return
    print(f"-- creating {venv} from {reqs.name}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(reqs)], check=True)
    stamp.touch()


def versions(peer: Peer | None) -> str:
    python = str(venv_of(peer) / "bin" / "python") if peer else sys.executable
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True
    )
    wanted = peer.packages if peer else ("fastapi", "uvicorn", "redis", "sqlalchemy", "asyncpg")
    found = {
        p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out.stdout or "[]")
    }
    return ", ".join(f"{name} {found[name]}" for name in wanted if name in found)


def fill(parts: list[str], peer: Peer, port: int) -> list[str]:
    ctx = {"venv": str(venv_of(peer)), "port": str(port), "dir": str(HERE / peer.key)}
    return [p.format(**ctx) for p in parts]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = await asyncio.to_thread(log.read_text)
            raise RuntimeError(f"server exited: {tail[-2000:]}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


def start_server(peer: Peer, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            fill(peer.server, peer, port),
            env=env,
            cwd=HERE / peer.key,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def template(n: int, pad: int) -> str:
    return f'{{"n":{n},"t":__T__,"pad":"{"x" * pad}"}}'


# --------------------------------------------------------------------------- one peer run


async def run_peer(peer: Peer, args: argparse.Namespace, run: int, logdir: Path) -> Result:
    result = Result(peer.key, run, args.sockets)
    channel = f"bench-peer-{secrets.token_hex(5)}"
    env = dict(os.environ, REDIS_URL=REDIS_URL, PEER_CHANNEL=channel, PEER_PREFIX=channel)
    env.update(peer.env)
    procs: list[subprocess.Popen[Any]] = []
    pool = Pool(args.procs, argv=[sys.executable, str(HERE / "client.py")])
    try:
        ports = [free_port() for _ in range(args.instances)]
        for i, port in enumerate(ports):
            log = logdir / f"{peer.key}-{run}-{i}.log"
            procs.append(start_server(peer, port, dict(env, PORT=str(port)), log))
            await wait_port(port, procs[-1], log)
        await asyncio.sleep(1.0)
        servers = procstat.Group("servers", [p.pid for p in procs])
        await pool.start()
        tool = procstat.Group("clients", pool.pids)
        before = servers.sample()
        urls = [f"ws://127.0.0.1:{ports[i % len(ports)]}{peer.path}" for i in range(args.sockets)]
        await pool.scatter("open", "urls", pool.split(urls), timeout=600, protocol=peer.protocol)
        stats = await wait_ready(pool, args.sockets)
        result.failed = stats["failed"]
        if stats["error_example"]:
            result.notes.append(f"client error: {stats['error_example']}")
        await asyncio.sleep(SETTLE_S)
        after = servers.sample()
        result.rss_per_socket_kib = (after.rss_kib - before.rss_kib) / max(1, stats["ready"])

        publisher = await asyncio.create_subprocess_exec(
            *fill(peer.publisher, peer, 0),
            env=env,
            cwd=HERE / peer.key,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs_async = publisher
        try:
            # Throughput: events back to back.
            events = [template(n, args.pad) for n in range(1, args.events + 1)]
            c0, k0, t0 = servers.sample().cpu_s, tool.sample().cpu_s, time.monotonic()
            await publish(publisher, events, 0)
            result.publish_rate = args.events / max(1e-6, time.monotonic() - t0)
            done = await wait_complete(pool, args.events)
            if done is None:
                result.notes.append("throughput: deliveries stalled before every socket had all")
            else:
                result.deliveries_per_s = args.sockets * args.events / (done - t0)
                cpu = servers.sample().cpu_s - c0
                result.server_cpu_us = 1e6 * cpu / (args.sockets * args.events)
                result.client_cpu_pct = 100 * (tool.sample().cpu_s - k0) / (done - t0)
            result.events = args.events
            # Latency: a steady rate.
            await pool.each("reset_latency")
            count = round(args.rate * args.seconds)
            last = args.events + count
            events = [template(n, args.pad) for n in range(args.events + 1, last + 1)]
            c1, t1 = servers.sample().cpu_s, time.monotonic()
            await publish(publisher, events, args.rate)
            result.lat_rate = count / (time.monotonic() - t1)
            if await wait_complete(pool, last) is None:
                result.notes.append("latency: deliveries stalled before every socket had all")
            else:
                cpu = servers.sample().cpu_s - c1
                result.steady_cpu_us = 1e6 * cpu / (args.sockets * count)
            reports = await pool.each("report", timeout=120, last=last)
        finally:
            if procs_async.stdin is not None:
                procs_async.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                procs_async.terminate()
            await procs_async.wait()
        tally, hist = Tally(), Histogram()
        for r in reports:
            t = r["tally"]
            tally.add(Tally(t["received"], t["lost"], t["duplicated"], t["out_of_order"]))
            hist.merge(Histogram.from_dict(r["latency"]))
            result.dropped += r["dropped"]
        result.lost, result.duplicated, result.out_of_order = (
            tally.lost,
            tally.duplicated,
            tally.out_of_order,
        )
        if hist.count:
            result.p50_ms = 1000 * hist.percentile(0.5)
            result.p99_ms = 1000 * hist.percentile(0.99)
            result.max_ms = 1000 * hist.max
    finally:
        await pool.stop()
        for proc in procs:
            await asyncio.to_thread(stop, proc)
    return result


async def publish(proc: asyncio.subprocess.Process, events: list[str], rate: float) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"events": events, "rate": rate}).encode() + b"\n")
    await proc.stdin.drain()
    line = await asyncio.wait_for(proc.stdout.readline(), 600)
    if not line:
        raise RuntimeError("publisher exited")


async def wait_ready(pool: Pool, sockets: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        snaps = await pool.each("stats", timeout=30)
        ready = sum(s["ready"] for s in snaps)
        failed = sum(s["failed"] for s in snaps)
        if ready + failed >= sockets or time.monotonic() > deadline:
            example = next((s["error_example"] for s in snaps if s["error_example"]), "")
            return {"ready": ready, "failed": failed, "error_example": example}
        await asyncio.sleep(0.1)


async def wait_complete(pool: Pool, last: int, quiet_s: float = 20.0) -> float | None:
    seen, changed = -1, time.monotonic()
    while True:
        parts = await pool.each("progress", timeout=60, last=last)
        now = time.monotonic()
        if sum(p["complete"] for p in parts) >= sum(p["streams"] for p in parts):
            return now
        events = sum(s["events"] for s in await pool.each("stats", timeout=30))
        if events != seen:
            seen, changed = events, now
        elif now - changed > quiet_s:
            return None
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- Kuda


async def run_kuda(args: argparse.Namespace, run: int, logdir: Path) -> Result:
    result = Result("kuda", run, args.sockets)
    out = logdir / f"kuda-{run}.json"
    cmd = [
        sys.executable,
        "-m",
        "server",
        "loadtest",
        "hot",
        "--spawn",
        str(args.instances),
    ]
    cmd += ["--fresh-db", "--sockets", str(args.sockets), "--events", str(args.events)]
    cmd += [
        "--rate",
        str(args.rate),
        "--duration",
        str(args.seconds),
        "--procs",
        str(args.procs),
    ]
    cmd += ["--publishers", str(args.publishers), "--no-progress", "--json", str(out)]
    cmd += ["--connect-concurrency", str(args.connect_concurrency)]
    env = dict(os.environ, DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text = (await proc.communicate())[0].decode(errors="replace")
    (logdir / f"kuda-{run}.txt").write_text(text)
    if not out.exists():
        raise RuntimeError(f"kuda loadtest failed:\n{text[-3000:]}")
    r = json.loads(out.read_text())["results"]
    result.events = args.events
    result.deliveries_per_s = r.get("deliveries_per_s") or float("nan")
    result.server_cpu_us = r.get("throughput_server_cpu_per_delivery_us", float("nan"))
    result.publish_rate = r.get("throughput_publish_rate", float("nan"))
    result.steady_cpu_us = r.get("server_cpu_per_delivery_us", float("nan"))
    result.rss_per_socket_kib = r.get("rss_per_socket_kib", float("nan"))
    lat = r.get("latency") or {}
    if lat.get("count"):
        result.p50_ms, result.p99_ms = 1000 * lat["p50"], 1000 * lat["p99"]
        result.max_ms = 1000 * lat["max"]
    result.lat_rate = r.get("publish_rate", float("nan"))
    result.lost, result.duplicated = r.get("lost", 0), r.get("duplicated", 0)
    result.out_of_order, result.dropped = r.get("out_of_order", 0), r.get("dropped", 0)
    result.failed = r.get("connect_failed", 0)
    result.client_cpu_pct = r.get("throughput_tool_cpu_pct", float("nan"))
    if proc.returncode:
        result.notes.append(f"kuda loadtest exited {proc.returncode}")
    return result


# --------------------------------------------------------------------------- report

ROWS = [
    ("deliveries/s, back to back", "deliveries_per_s", "{:,.0f}"),
    ("events published per second, back to back", "publish_rate", "{:,.0f}"),
    ("server CPU per delivery, back to back (µs)", "server_cpu_us", "{:.2f}"),
    ("server CPU per delivery at the steady rate (µs)", "steady_cpu_us", "{:.2f}"),
    ("p50 at the steady rate (ms)", "p50_ms", "{:.1f}"),
    ("p99 at the steady rate (ms)", "p99_ms", "{:.1f}"),
    ("max at the steady rate (ms)", "max_ms", "{:.1f}"),
    ("idle RSS per socket (KiB)", "rss_per_socket_kib", "{:.1f}"),
    ("client processes' CPU, back to back (% of a core)", "client_cpu_pct", "{:.0f}"),
]


def fmt(fmt_: str, v: float) -> str:
    return "-" if v != v else fmt_.format(v)


def render(args: argparse.Namespace, results: list[Result], header: list[str]) -> str:
    systems = [s for s in args.system_list if any(r.system == s for r in results)]
    title = {k: p.title for k, p in PEERS.items()}
    title["kuda"] = "Kuda (REST -> PostgreSQL -> Redis)"
    lines = [*header, ""]
    cols = ["metric", *(title[s] for s in systems)]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for label, attr, f in ROWS:
        cells = [label]
        for s in systems:
            vals = [getattr(r, attr) for r in results if r.system == s]
            cells.append(" / ".join(fmt(f, v) for v in vals))
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["lost / duplicated / out of order / dropped"]
    for s in systems:
        rs = [r for r in results if r.system == s]
        counts = (f"{r.lost}/{r.duplicated}/{r.out_of_order}/{r.dropped}" for r in rs)
        cells.append(" / ".join(counts))
    lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *ratios(results)]
    for r in results:
        for note in r.notes:
            lines.append(f"- note ({r.system} #{r.run}): {note}")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    v = sorted(x for x in values if x == x)
    if not v:
        return float("nan")
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def ratios(results: list[Result]) -> list[str]:
    def med(system: str, attr: str) -> float:
        return median([getattr(r, attr) for r in results if r.system == system])

    kuda = med("kuda", "deliveries_per_s")
    peers = {s: med(s, "deliveries_per_s") for s in ("broadcaster", "socketio", "channels")}
    peers = {s: v for s, v in peers.items() if v == v}
    out = []
    if kuda == kuda and peers:
        best = max(peers, key=lambda s: peers[s])
        out.append(
            f"- Kuda ÷ fastest peer ({best}), medians of deliveries/s: "
            f"**{kuda / peers[best]:.2f}x** (target >= 1.5x)"
        )
    ceiling = med("ceiling", "deliveries_per_s")
    if kuda == kuda and ceiling == ceiling:
        out.append(f"- Kuda ÷ ceiling: **{100 * kuda / ceiling:.0f} %** (target >= 70 %)")
    k_rss, c_rss = (
        med("kuda", "rss_per_socket_kib"),
        med("ceiling", "rss_per_socket_kib"),
    )
    if k_rss == k_rss and c_rss == c_rss:
        out.append(f"- idle RSS per socket, Kuda ÷ ceiling: {k_rss / c_rss:.2f}x (target <= 1.15x)")
    return out


BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


async def main(args: argparse.Namespace) -> int:
    for key in args.system_list:
        if key in PEERS:
            ensure_venv(PEERS[key])
    logdir = Path(tempfile.mkdtemp(prefix="kuda-peers-"))
    results: list[Result] = []
    started = datetime.now(UTC)
    for run in range(1, args.repeat + 1):
        for key in args.system_list:
            print(f"-- {key} run {run}: {args.sockets} sockets ...", file=sys.stderr)
            try:
                r = (
                    await run_kuda(args, run, logdir)
                    if key == "kuda"
                    else await run_peer(PEERS[key], args, run, logdir)
                )
            except Exception as exc:
                r = Result(key, run, args.sockets, notes=[f"failed: {exc!r}"[:500]])
            print(f"   {asdict(r)}", file=sys.stderr)
            results.append(r)
    header = [
        f"Run {started:%Y-%m-%d %H:%M} UTC, `bench/peers/run.py --sockets {args.sockets} "
        f"--events {args.events} --rate {args.rate:g} --seconds {args.seconds:g} "
        f"--repeat {args.repeat}`; {args.instances} instances per system on one Redis; "
        f"cells are run 1 / run 2 ...",
        "",
        f"- machine: {machine()}, {platform.machine()}; load average before: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"- Kuda: {versions(None)}; code {git_head()}",
        *(f"- {PEERS[k].title}: {versions(PEERS[k])}" for k in args.system_list if k in PEERS),
    ]
    text = render(args, results, header)
    print(text)
    if args.write is not None:
        write_section(args.write, text)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"logs in {logdir}", file=sys.stderr)
    return 0


def git_head() -> str:
    git = shutil.which("git") or "git"
    out = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True)
    return out.stdout.decode().strip() or "unknown"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--events", type=int, default=300)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--publishers", type=int, default=16, help="Kuda: REST publish calls in flight")
    p.add_argument("--connect-concurrency", type=int, default=16, help="sockets opening at once")
    p.add_argument("--systems", default="kuda,broadcaster,socketio,channels,ceiling")
    p.add_argument(
        "--pad",
        type=int,
        default=80,
        help="peers: bytes of padding in each published payload (Kuda's is its ride view)",
    )
    p.add_argument("--write", type=Path, help="replace the peers section of this Markdown file")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.system_list) - {"kuda", *PEERS}
    if unknown:
        p.error(f"unknown systems: {sorted(unknown)}")
    return args


if __name__ == "__main__":
    import uvloop

    raise SystemExit(uvloop.run(main(parse_args())))
