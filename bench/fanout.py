"""Fan-out benchmark of Kuda's realtime core: raw-frame writer vs stock uvicorn sends.

For each mode (``WS_RAW_WRITER=true`` = raw, ``false`` = stock), in the same run and with a
fresh cluster each time (its own database, Redis prefix and server processes):

1. a fresh database ``kuda_bench_<hex>`` is created and migrated; ``--instances`` ``kuda serve``
   processes start on it and on the shared Redis (with a unique ``REDIS_PREFIX``);
2. an in-process writer (``create_app`` under ``LifespanManager``, no HTTP) is the third
   instance; every event is appended through it (``channels.append`` + commit, the full
   durable path: PostgreSQL commit -> outbox -> Redis -> instances -> sockets);
3. ``--sockets`` picows clients (round-robin over the instances, held by one child process
   of this script so that they do not starve the writer's event loop) authenticate as one user
   and subscribe to ``user:<id>``; idle RSS per socket = growth of the servers' VmRSS / sockets
   (after a warm-up socket per instance has come and gone, and a 2 s settle);
4. throughput: ``--events`` events appended back to back, one transaction each; measured from
   the first append until every socket holds every event; server CPU from /proc/<pid>/stat;
5. latency: ``--rate`` events/s for ``--seconds``; per delivery, receive time minus the time
   the writer's commit returned (and minus the time its append started, carried as ``t``).

Every socket's events are checked: all present, strictly increasing, no duplicates. CPU during
each phase is attributed from /proc to the servers, the client process, the writer, PostgreSQL,
Redis and anything else; a run in which other processes took a noticeable share (other
sessions' test suites on the same cores) is re-run (``--retries``) and the least disturbed
attempt kept. Modes are interleaved (raw, stock, raw, stock) so that drift hits both.
Everything (clients, processes, the writer, the database, Redis keys under the prefix) is torn
down on exit, errors, Ctrl-C and SIGTERM included. The shared Redis is never flushed.

    .venv/bin/python bench/fanout.py [--sockets 1000] [--instances 2] [--events 300]
        [--rate 50] [--seconds 10] [--modes raw,stock] [--repeat 2] [--retries 2]
        [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = str(Path(__file__).resolve())
REPO = Path(SCRIPT).parent.parent
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import append
from server import migrate
from server.app import create_app
from server.config import Settings
from tests import services
from tests.procs import free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "bench-password-42"  # noqa: S105 (a throwaway account in a throwaway database)
PAD = "x" * 80  # with "n" and "t" the event's data is ~110 bytes of JSON
CONNECT_CONCURRENCY = 64
SETTLE_S = 2.0
READY_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
EVENT_PREFIX = b'{"type":"event"'
N_KEY = b'"n":'


# --------------------------------------------------------------------------- process stats


def _descendants(roots: Sequence[int]) -> list[int]:
    """The roots and every process below them (uvicorn may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in _descendants(pids):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def machine_busy() -> tuple[int, int, int]:
    """(busy, iowait, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, values[4], total


def proc_table() -> dict[int, tuple[str, int]]:
    """pid -> (command name, utime + stime in ticks) of every process on the machine."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                head, tail = stat.rsplit(")", 1)
                fields = tail.split()
                table[int(entry)] = (head.split("(", 1)[1], int(fields[11]) + int(fields[12]))
    return table


@dataclass
class CpuUse:
    """CPU seconds used during one phase, by role, and how busy the whole machine was."""

    wall_s: float = 0.0
    servers: float = 0.0
    clients: float = 0.0
    writer: float = 0.0
    postgres: float = 0.0
    redis: float = 0.0
    other: float = 0.0
    busy_pct: float = 0.0
    iowait_pct: float = 0.0
    top_other: str = ""


class CpuMeter:
    def __init__(self, servers: Sequence[int], client: int) -> None:
        self.servers = set(_descendants(servers))
        self.client = client
        self.writer = os.getpid()
        self._t0: dict[int, tuple[str, int]] = {}
        self._busy0 = (0, 0, 0)
        self._wall0 = 0.0

    def start(self) -> None:
        self._t0, self._busy0, self._wall0 = proc_table(), machine_busy(), time.monotonic()

    def stop(self) -> CpuUse:
        t1, busy1 = proc_table(), machine_busy()
        use = CpuUse(wall_s=time.monotonic() - self._wall0)
        others: dict[int, float] = {}
        for pid, (comm, ticks) in t1.items():
            seconds = (ticks - self._t0.get(pid, (comm, 0))[1]) / CLK_TCK
            if pid in self.servers:
                use.servers += seconds
            elif pid == self.client:
                use.clients += seconds
            elif pid == self.writer:
                use.writer += seconds
            elif comm.startswith("postgres"):
                use.postgres += seconds
            elif comm.startswith("redis-server"):
                use.redis += seconds
            else:
                use.other += seconds
                others[pid] = seconds
        jiffies = max(1, busy1[2] - self._busy0[2])
        use.busy_pct = 100 * (busy1[0] - self._busy0[0]) / jiffies
        use.iowait_pct = 100 * (busy1[1] - self._busy0[1]) / jiffies
        top = sorted(others.items(), key=lambda kv: -kv[1])[:3]
        use.top_other = "; ".join(
            f"{_cmdline(pid, t1[pid][0])} {sec:.2f}s" for pid, sec in top if sec >= 0.05
        )
        return use


def _cmdline(pid: int, comm: str) -> str:
    with contextlib.suppress(OSError):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        if args:
            return f"[{pid}] {args.decode(errors='replace')[:70]}"
    return f"[{pid}] {comm}"


async def wait_quiet(limit_s: float = 30.0, threshold_pct: float = 20.0) -> float:
    """Wait (at most `limit_s`) for the machine to be mostly idle; returns the seconds waited:
    other sessions may run test suites on the same cores."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        busy0 = machine_busy()
        await asyncio.sleep(0.5)
        busy1 = machine_busy()
        if 100 * (busy1[0] - busy0[0]) / max(1, busy1[2] - busy0[2]) < threshold_pct:
            break
    return time.monotonic() - start - 0.5


# --------------------------------------------------------------------------- clients


class Collector:
    """State shared by every client: which event the current phase waits for."""

    def __init__(self, sockets: int) -> None:
        self.sockets = sockets
        self.wait_for = 0
        self.reached = 0
        self.done: asyncio.Future[float] | None = None
        self.record = False
        self.rec_n: array[int] = array("q")
        self.rec_t: array[float] = array("d")

    def phase(self, wait_for: int, record: bool) -> asyncio.Future[float]:
        self.wait_for, self.reached, self.record = wait_for, 0, record
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def arrived(self) -> None:
        self.reached += 1
        if self.reached >= self.sockets and self.done is not None and not self.done.done():
            self.done.set_result(time.monotonic())


class Client(WSListener):
    """One socket: checks that event numbers arrive complete, in order, once."""

    def __init__(self, coll: Collector) -> None:
        loop = asyncio.get_running_loop()
        self.coll = coll
        self.transport: WSTransport | None = None
        self.welcome: asyncio.Future[None] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.next_n = 1
        self.received = 0
        self.missing = 0
        self.disorder = 0
        self.reached_upto = 0
        self.close_code: int | None = None
        self.disconnected = False
        self.unexpected: list[str] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload.startswith(EVENT_PREFIX):
                self._event(payload)
            else:
                self._control(payload)
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code().value)
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _event(self, payload: bytes) -> None:
        start = payload.find(N_KEY) + len(N_KEY)
        n = int(payload[start : payload.find(b",", start)])
        if n == self.next_n:
            self.next_n = n + 1
        elif n < self.next_n:
            self.disorder += 1  # a duplicate or an event older than one already seen
        else:
            self.missing += n - self.next_n
            self.next_n = n + 1
        self.received += 1
        coll = self.coll
        if coll.record:
            coll.rec_n.append(n)
            coll.rec_t.append(time.time())
        if n >= coll.wait_for > self.reached_upto:
            self.reached_upto = coll.wait_for
            coll.arrived()

    def _control(self, payload: bytes) -> None:
        frame: dict[str, Any] = orjson.loads(payload)
        kind = frame.get("type")
        if kind == "welcome" and not self.welcome.done():
            self.welcome.set_result(None)
        elif kind == "subscribed" and not self.subscribed.done():
            self.subscribed.set_result(None)
        else:
            self.unexpected.append(payload.decode(errors="replace")[:200])
            if kind == "error" and not self.subscribed.done():
                self.subscribed.set_exception(RuntimeError(f"subscribe refused: {frame}"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        for fut in (self.welcome, self.subscribed):
            if not fut.done():
                fut.set_exception(ConnectionError(f"disconnected (close code {self.close_code})"))


async def open_client(
    url: str, token: str, channel: str, coll: Collector, gate: asyncio.Semaphore
) -> Client:
    async with gate:
        _, client = await ws_connect(
            lambda: Client(coll),
            url,
            extra_headers={"Authorization": f"Bearer {token}"},
            websocket_handshake_timeout=30,
        )
        assert isinstance(client, Client)
        try:
            await asyncio.wait_for(client.welcome, 30)
            assert client.transport is not None
            subscribe = orjson.dumps({"op": "subscribe", "channel": channel})
            client.transport.send(WSMsgType.TEXT, subscribe)
            await asyncio.wait_for(client.subscribed, 30)
        except BaseException:
            close_client(client)
            raise
        return client


def close_client(client: Client) -> None:
    if client.transport is not None and not client.disconnected:
        client.transport.disconnect(graceful=False)


async def close_clients(clients: list[Client]) -> None:
    for client in clients:
        close_client(client)
    waits = [c.transport.wait_disconnected() for c in clients if c.transport is not None]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)


# --------------------------------------------------------------------------- client process
# The sockets live in a child process: in the writer's process, 1,000 busy sockets starve the
# writer's event loop (each of its awaits waits for a loop pass over every readable socket).


class ClientWorker:
    """The child's side: holds the sockets, answers one JSON request per line."""

    def __init__(self) -> None:
        self.coll = Collector(0)
        self.clients: list[Client] = []

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "connect":
            return await self._connect(req["urls"], req["token"], req["channel"], req["sockets"])
        if cmd == "phase":
            self.coll.phase(int(req["wait_for"]), bool(req["record"]))
            return {"ok": True}
        if cmd == "wait":
            return await self._wait(float(req["wait_s"]))
        if cmd == "latency":
            return self._latency(req["first"], req["committed"], req["started"])
        if cmd == "verify":
            return self._verify(int(req["total"]))
        if cmd == "close":
            await close_clients(self.clients)
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")

    async def _connect(self, urls: list[str], token: str, channel: str, n: int) -> dict[str, Any]:
        self.coll.sockets = n
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        t0 = time.monotonic()
        tasks = [
            asyncio.ensure_future(open_client(urls[i % len(urls)], token, channel, self.coll, gate))
            for i in range(n)
        ]
        done = await asyncio.gather(*tasks, return_exceptions=True)
        self.clients.extend(c for c in done if isinstance(c, Client))
        errors = [e for e in done if isinstance(e, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)}/{n} sockets failed to subscribe, e.g. {errors[0]!r}")
        return {"connect_s": time.monotonic() - t0}

    async def _wait(self, wait_s: float) -> dict[str, Any]:
        assert self.coll.done is not None
        try:
            t_end = await asyncio.wait_for(asyncio.shield(self.coll.done), wait_s)
        except TimeoutError:
            return {"all": False, "reached": self.coll.reached, "t": time.monotonic()}
        return {"all": True, "reached": self.coll.reached, "t": t_end}

    def _latency(self, first: int, committed: list[float], started: list[float]) -> dict[str, Any]:
        coll = self.coll
        coll.record = False
        commit_lat, append_lat = [], []
        for n, t in zip(coll.rec_n, coll.rec_t, strict=True):
            i = n - first
            if 0 <= i < len(committed):
                commit_lat.append(t - committed[i])
                append_lat.append(t - started[i])
        coll.rec_n, coll.rec_t = array("q"), array("d")
        commit_lat.sort()
        append_lat.sort()
        return {
            "samples": len(commit_lat),
            "min": commit_lat[0] if commit_lat else None,
            "p50": percentile(commit_lat, 0.50),
            "p99": percentile(commit_lat, 0.99),
            "max": commit_lat[-1] if commit_lat else None,
            "append_p99": percentile(append_lat, 0.99),
        }

    def _verify(self, total: int) -> dict[str, Any]:
        clients = self.clients
        return {
            "missing": sum(c.missing + max(0, total + 1 - c.next_n) for c in clients),
            "disorder": sum(c.disorder for c in clients),
            "short": sum(c.received != total or c.next_n != total + 1 for c in clients),
            "disconnected": sum(c.disconnected for c in clients),
            "unexpected": sum(len(c.unexpected) for c in clients),
            "example": next((c.unexpected[0] for c in clients if c.unexpected), None),
            "codes": sorted({c.close_code for c in clients if c.close_code is not None}),
        }


async def client_worker() -> None:
    """`fanout.py --client-worker`: serve requests from stdin until `close` or EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = ClientWorker()
    try:
        while line := await reader.readline():
            req: dict[str, Any] = orjson.loads(line)
            try:
                reply = await worker.handle(req)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
            sys.stdout.buffer.flush()
            if req["cmd"] == "close":
                break
    finally:
        await close_clients(worker.clients)


class ClientProc:
    """The parent's side of the client process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--client-worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
            limit=1 << 24,
        )

    async def call(self, req: dict[str, Any], timeout: float = 60) -> dict[str, Any]:  # noqa: ASYNC109
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(orjson.dumps(req) + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process exited ({proc.returncode}) during {req['cmd']}")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise RuntimeError(f"client process, {req['cmd']}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.call({"cmd": "close"}, timeout=15)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- cluster


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProc:
    """`python -m server serve` in a subprocess; output goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_path = log_path
        self._log = log_path.open("ab")
        # Started from the event loop's thread: PR_SET_PDEATHSIG follows the forking thread.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", str(self.port)],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                ready = await http.get(self.base_url + "/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("status") == "ok":
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"server on {self.port} not ready:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def delete_redis_keys(prefix: str) -> None:
    """Only the keys under this run's own prefix: the Redis is shared."""
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
    finally:
        await redis.aclose()


async def stop_servers(servers: list[ServerProc]) -> None:
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


def server_env(db_url: str, prefix: str, secret: str, raw: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "JWT_"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": prefix,
            "JWT_SECRET": secret,
            "WS_RAW_WRITER": "true" if raw else "false",
            "LOG_LEVEL": "warning",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            "WS_OPS_PER_S": "1000",
            "WS_OPS_BURST": "1000",
            "SOCKETS_PER_USER": "0",  # one user holds every benchmark socket
            "WRITE_RATE_PER_USER": "0",
            "WS_MAX_BUFFER_BYTES": "4194304",
            "ACCESS_TOKEN_TTL_S": "3600",
        }
    )
    return env


async def register(http: httpx.AsyncClient, base_url: str) -> tuple[int, str]:
    email = f"bench-{secrets.token_hex(5)}@example.com"
    body = {"email": email, "password": PASSWORD, "display_name": "Bench"}
    created = await http.post(base_url + "/api/v1/auth/register", json=body)
    created.raise_for_status()
    form = {"username": email, "password": PASSWORD}
    tokens = await http.post(base_url + "/api/v1/auth/token", data=form)
    tokens.raise_for_status()
    return int(created.json()["id"]), str(tokens.json()["access_token"])


# --------------------------------------------------------------------------- one run


@dataclass
class Result:
    mode: str
    run: int
    sockets: int
    instances: int
    connect_s: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    rss_per_socket_kib: float = 0.0
    events: int = 0
    append_s: float = 0.0
    elapsed_s: float = 0.0
    deliveries_per_s: float = 0.0
    server_cpu_us: float = 0.0
    tp_cpu: CpuUse = field(default_factory=CpuUse)
    lat_cpu: CpuUse = field(default_factory=CpuUse)
    load_before: str = ""
    complete: bool = False
    lat_events: int = 0
    lat_rate: float = 0.0
    lat_p50_ms: float = 0.0
    lat_p99_ms: float = 0.0
    lat_max_ms: float = 0.0
    lat_append_p99_ms: float = 0.0
    lat_samples: int = 0
    missing: int = 0
    disorder: int = 0
    short_sockets: int = 0
    disconnected: int = 0
    unexpected_frames: int = 0
    server_log_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def disturbed(self) -> bool:
        return disturbed(self.tp_cpu) or disturbed(self.lat_cpu)


DISTURBED_SHARE = 0.05  # of all cores during a phase, by processes not in the benchmark


def disturbed(use: CpuUse) -> bool:
    cores = os.cpu_count() or 1
    return use.other > max(0.3, DISTURBED_SHARE * use.wall_s * cores)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


class Writer:
    """Appends numbered events through the in-process instance, one transaction each."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], channel: str) -> None:
        self.sessionmaker = sessionmaker
        self.channel = channel
        self.n = 0
        self.started: dict[int, float] = {}
        self.committed: dict[int, float] = {}

    async def append_one(self) -> None:
        self.n += 1
        n = self.n
        started = time.time()
        async with self.sessionmaker() as session:
            await append(session, self.channel, "bench.tick", {"n": n, "t": started, "pad": PAD})
            await session.commit()
            self.committed[n] = time.time()  # no await between commit and this line
        self.started[n] = started


async def run_once(args: argparse.Namespace, mode: str, run: int, logdir: Path) -> Result:
    result = Result(mode, run, args.sockets, args.instances)
    async with contextlib.AsyncExitStack() as stack:
        db_name, db_url = await services.create_database("kuda_bench")
        stack.push_async_callback(services.drop_database, db_name)
        await asyncio.to_thread(migrate.upgrade, db_url)
        prefix = f"kuda-bench-{secrets.token_hex(6)}:"
        stack.push_async_callback(delete_redis_keys, prefix)
        secret = secrets.token_urlsafe(36)  # 48 characters
        env = server_env(db_url, prefix, secret, raw=mode == "raw")
        servers: list[ServerProc] = []
        stack.callback(_scan_logs, servers, result)  # runs after the servers stopped
        stack.push_async_callback(stop_servers, servers)
        for i in range(args.instances):
            servers.append(ServerProc(env, logdir / f"{mode}-{run}-{i}.log"))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        await asyncio.gather(*(s.wait_ready(http) for s in servers))
        pids = [s.pid for s in servers]

        settings = Settings(
            database_url=db_url,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            jwt_secret=SecretStr(secret),
            log_level="warning",
            password_hash_time_cost=1,
            password_hash_memory_kib=1024,
            ws_raw_writer=mode == "raw",
            access_token_ttl_s=3600,
        )
        app = create_app(settings)
        await stack.enter_async_context(LifespanManager(app, startup_timeout=30))
        user_id, token = await register(http, servers[0].base_url)
        channel = f"user:{user_id}"
        writer = Writer(app.state.sessionmaker, channel)
        clients = ClientProc()
        stack.push_async_callback(clients.stop)
        await clients.start()

        # Warm-up: one socket per instance loads the WebSocket code paths, then leaves.
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        warm = Collector(args.instances)
        warm_clients = await asyncio.gather(
            *(open_client(s.ws_url, token, channel, warm, gate) for s in servers)
        )
        await close_clients(list(warm_clients))
        await asyncio.sleep(1.0)

        result.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        result.rss_before_kib = rss_kib(pids)
        request = {"cmd": "connect", "token": token, "channel": channel, "sockets": args.sockets}
        request["urls"] = [s.ws_url for s in servers]
        connected = await clients.call(request, timeout=300)
        result.connect_s = float(connected["connect_s"])
        await asyncio.sleep(SETTLE_S)
        result.rss_after_kib = rss_kib(pids)
        delta = result.rss_after_kib - result.rss_before_kib
        result.rss_per_socket_kib = delta / args.sockets

        await throughput(args, writer, clients, pids, result)
        await latency(args, writer, clients, pids, result)
        verify(await clients.call({"cmd": "verify", "total": writer.n}), result)
    return result


async def throughput(
    args: argparse.Namespace, writer: Writer, clients: ClientProc, pids: list[int], result: Result
) -> None:
    first, last = writer.n + 1, writer.n + args.events
    await clients.call({"cmd": "phase", "wait_for": last, "record": False})
    _waited(await wait_quiet(), "throughput", result)
    meter = CpuMeter(pids, clients.pid)
    meter.start()
    t0 = time.monotonic()
    for _ in range(first, last + 1):
        await writer.append_one()
    result.append_s = time.monotonic() - t0
    timeout = 30 + args.sockets * args.events / 20_000
    reply = await clients.call({"cmd": "wait", "wait_s": timeout}, timeout=timeout + 30)
    result.tp_cpu = use = meter.stop()
    result.complete = bool(reply["all"])
    if not result.complete:
        result.notes.append(
            f"throughput: only {reply['reached']}/{args.sockets} sockets got event {last} "
            f"within {timeout:.0f}s"
        )
    result.events = args.events
    result.elapsed_s = float(reply["t"]) - t0
    deliveries = args.sockets * args.events
    result.deliveries_per_s = deliveries / result.elapsed_s
    result.server_cpu_us = use.servers / deliveries * 1e6


async def latency(
    args: argparse.Namespace, writer: Writer, clients: ClientProc, pids: list[int], result: Result
) -> None:
    count = round(args.rate * args.seconds)
    first, last = writer.n + 1, writer.n + count
    await clients.call({"cmd": "phase", "wait_for": last, "record": True})
    _waited(await wait_quiet(), "latency", result)
    meter = CpuMeter(pids, clients.pid)
    meter.start()
    start = time.monotonic()
    for k in range(count):
        delay = start + k / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await writer.append_one()
    sent_s = time.monotonic() - start
    reply = await clients.call({"cmd": "wait", "wait_s": 30}, timeout=60)
    result.lat_cpu = meter.stop()
    if not reply["all"]:
        result.notes.append(f"latency: only {reply['reached']}/{args.sockets} got event {last}")
    result.lat_events = count
    result.lat_rate = count / sent_s if sent_s > 0 else float("nan")
    request = {
        "cmd": "latency",
        "first": first,
        "committed": [writer.committed[n] for n in range(first, last + 1)],
        "started": [writer.started[n] for n in range(first, last + 1)],
    }
    stats = await clients.call(request, timeout=120)
    result.lat_samples = int(stats["samples"])
    if result.lat_samples:
        result.lat_p50_ms = 1000 * float(stats["p50"])
        result.lat_p99_ms = 1000 * float(stats["p99"])
        result.lat_max_ms = 1000 * float(stats["max"])
        result.lat_append_p99_ms = 1000 * float(stats["append_p99"])
        if float(stats["min"]) < 0:
            result.notes.append(f"negative latency {1000 * float(stats['min']):.2f} ms")
    expected = count * args.sockets
    if result.lat_samples != expected:
        result.notes.append(f"latency: {result.lat_samples} deliveries, expected {expected}")


def _waited(seconds: float, phase: str, result: Result) -> None:
    if seconds > 0.5:
        result.notes.append(f"{phase}: waited {seconds:.1f}s for other load on the machine")


def verify(counts: dict[str, Any], result: Result) -> None:
    result.missing = int(counts["missing"])
    result.disorder = int(counts["disorder"])
    result.short_sockets = int(counts["short"])
    result.disconnected = int(counts["disconnected"])
    result.unexpected_frames = int(counts["unexpected"])
    if counts["example"] is not None:
        result.notes.append(
            f"{result.unexpected_frames} unexpected frames, e.g. {counts['example']}"
        )
    if counts["codes"]:
        result.notes.append(f"close codes seen: {counts['codes']}")
    if result.short_sockets:
        result.notes.append(f"{result.short_sockets} sockets did not receive exactly every event")


def _scan_logs(servers: list[ServerProc], result: Result) -> None:
    for server in servers:
        with contextlib.suppress(OSError):
            for line in server.log_path.read_text(errors="replace").splitlines():
                if any(word in line for word in ("ERROR", "Traceback", "CRITICAL", "WARNING")):
                    result.server_log_errors.append(f"{server.log_path.name}: {line[:300]}")


# --------------------------------------------------------------------------- report


def lat_cpu_us(r: Result) -> float:
    deliveries = r.lat_events * r.sockets
    return 1e6 * r.lat_cpu.servers / deliveries if deliveries else float("nan")


ROWS: list[tuple[str, str, Callable[[Result], float], str]] = [
    ("deliveries/s", "{:,.0f}", lambda r: r.deliveries_per_s, "high"),
    ("elapsed, first append -> all delivered (s)", "{:.3f}", lambda r: r.elapsed_s, "low"),
    ("appending the events alone (s)", "{:.3f}", lambda r: r.append_s, "low"),
    ("  mean append + commit (ms)", "{:.2f}", lambda r: 1000 * r.append_s / r.events, "low"),
    ("last commit -> all delivered (s)", "{:.3f}", lambda r: r.elapsed_s - r.append_s, "low"),
    ("server CPU per delivery (us)", "{:.2f}", lambda r: r.server_cpu_us, "low"),
    ("  CPU s in that window: servers", "{:.2f}", lambda r: r.tp_cpu.servers, "low"),
    ("  clients (picows child process)", "{:.2f}", lambda r: r.tp_cpu.clients, "low"),
    ("  writer (this process)", "{:.2f}", lambda r: r.tp_cpu.writer, "low"),
    ("  PostgreSQL", "{:.2f}", lambda r: r.tp_cpu.postgres, "low"),
    ("  Redis (shared)", "{:.2f}", lambda r: r.tp_cpu.redis, "low"),
    (
        "  anything else (other sessions' processes, kernel threads)",
        "{:.2f}",
        lambda r: r.tp_cpu.other,
        "low",
    ),
    ("  machine CPU busy (% of all cores)", "{:.0f}", lambda r: r.tp_cpu.busy_pct, "low"),
    ("  machine CPU in I/O wait (%)", "{:.0f}", lambda r: r.tp_cpu.iowait_pct, "low"),
    ("commit-to-socket p50 (ms)", "{:.2f}", lambda r: r.lat_p50_ms, "low"),
    ("commit-to-socket p99 (ms)", "{:.2f}", lambda r: r.lat_p99_ms, "low"),
    ("commit-to-socket max (ms)", "{:.2f}", lambda r: r.lat_max_ms, "low"),
    ("append-start-to-socket p99 (ms)", "{:.2f}", lambda r: r.lat_append_p99_ms, "low"),
    ("latency events sent per s", "{:.1f}", lambda r: r.lat_rate, "-"),
    ("  machine CPU busy in latency phase (%)", "{:.0f}", lambda r: r.lat_cpu.busy_pct, "-"),
    ("  servers' CPU in latency phase (s)", "{:.2f}", lambda r: r.lat_cpu.servers, "-"),
    ("  server CPU per delivery in latency phase (us)", "{:.2f}", lat_cpu_us, "low"),
    ("  anything else in latency phase (s)", "{:.2f}", lambda r: r.lat_cpu.other, "-"),
    ("idle RSS per socket (KiB)", "{:.1f}", lambda r: r.rss_per_socket_kib, "low"),
    ("servers' RSS before -> after sockets (MiB)", "", lambda r: 0.0, "-"),
    ("connect + subscribe all sockets (s)", "{:.2f}", lambda r: r.connect_s, "low"),
    ("load average before the run", "", lambda r: 0.0, "-"),
    ("lost events / out of order or duplicate / sockets dropped", "", lambda r: 0.0, "-"),
]


def _cell(label: str, fmt: str, get: Callable[[Result], float], r: Result) -> str:
    if label.startswith("servers' RSS"):
        return f"{r.rss_before_kib / 1024:.1f} -> {r.rss_after_kib / 1024:.1f}"
    if label.startswith("lost events"):
        return f"{r.missing} / {r.disorder} / {r.disconnected}"
    if label.startswith("load average"):
        return r.load_before
    return fmt.format(get(r))


def render(results: list[Result], modes: list[str]) -> str:
    cols = [r for m in modes for r in results if r.mode == m]
    heads = [f"{r.mode} #{r.run}" for r in cols]
    ratio = "raw ÷ stock (mean)" if {"raw", "stock"} <= set(modes) else None
    header = ["metric", *heads] + ([ratio] if ratio else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, fmt, get, _ in ROWS:
        row = [label, *(_cell(label, fmt, get, r) for r in cols)]
        if ratio:
            row.append(_ratio(label, get, results))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


NO_RATIO = (
    "servers' RSS",
    "lost events",
    "latency events",
    "load",
    "  machine",
    "  anything",
    "  mean append",
)


def _ratio(label: str, get: Callable[[Result], float], results: list[Result]) -> str:
    if label.startswith(NO_RATIO):
        return ""
    raw = [get(r) for r in results if r.mode == "raw"]
    stock = [get(r) for r in results if r.mode == "stock"]
    if not raw or not stock or sum(stock) == 0:
        return ""
    return f"{(sum(raw) / len(raw)) / (sum(stock) / len(stock)):.2f}x"


def describe_machine() -> str:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    loop = "uvloop" if _uvloop() is not None else "asyncio"
    return (
        f"{os.cpu_count()} CPUs, {mem_kib / 1024 / 1024:.1f} GiB RAM, Python "
        f"{platform.python_version()}, {platform.platform()}, client loop {loop}"
    )


def code_version() -> str:
    """The commit measured, and whether the realtime or server code had local changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    run = subprocess.run  # a fixed command on our own repository
    head = run([git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = run(
        [git, "status", "--porcelain", "--", "server", "channels", "models", "migrations"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    changed = len(dirty.stdout.splitlines())
    return head.stdout.strip() + (f" + {changed} changed files in the app" if changed else "")


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--events", type=int, default=300, help="events in the throughput phase")
    p.add_argument("--rate", type=float, default=50.0, help="events/s in the latency phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    p.add_argument("--modes", default="raw,stock", help="comma-separated: raw, stock")
    p.add_argument("--repeat", type=int, default=2, help="runs of each mode (interleaved)")
    p.add_argument(
        "--retries", type=int, default=2, help="re-runs of a run disturbed by other processes"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.mode_list or set(args.mode_list) - {"raw", "stock"}:
        p.error("--modes takes raw and/or stock")
    if min(args.sockets, args.instances, args.events, args.repeat) < 1 or args.rate <= 0:
        p.error("counts must be positive")
    if args.retries < 0:
        p.error("counts must be positive")
    return args


async def main(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    _raise_fd_limit(args.sockets)
    logdir = Path(tempfile.mkdtemp(prefix="kuda-bench-"))
    results: list[Result] = []
    try:
        for run in range(1, args.repeat + 1):
            for mode in args.mode_list:
                results.append(await run_until_undisturbed(args, mode, run, logdir))
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    print(_report(args, results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    ok = all(r.complete and not (r.missing or r.disorder or r.disconnected) for r in results)
    return 0 if ok else 1


async def run_until_undisturbed(
    args: argparse.Namespace, mode: str, run: int, logdir: Path
) -> Result:
    """Run; while other processes took a noticeable share of the CPU during a measured phase
    (other sessions' test suites on shared cores), run again, up to --retries times. Keeps the
    least disturbed attempt and notes the others."""
    attempts: list[Result] = []
    for attempt in range(1 + args.retries):
        label = f"-- {mode} run {run}" + (f" (retry {attempt})" if attempt else "")
        print(f"{label}: {args.sockets} sockets ...", file=sys.stderr)
        result = await run_once(args, mode, run, logdir)
        attempts.append(result)
        print(f"   {_summary(result)}", file=sys.stderr)
        if not result.disturbed:
            break
    best = min(attempts, key=lambda r: r.tp_cpu.other + r.lat_cpu.other)
    for other in attempts:
        if other is not best:
            best.notes.append(f"discarded a more disturbed attempt: {_summary(other)}")
    return best


def _summary(r: Result) -> str:
    return (
        f"{r.deliveries_per_s:,.0f} deliveries/s, {r.server_cpu_us:.2f} us CPU/delivery, "
        f"p99 {r.lat_p99_ms:.1f} ms, {r.rss_per_socket_kib:.1f} KiB/socket, "
        f"lost {r.missing}, disorder {r.disorder}, disconnected {r.disconnected}, "
        f"other load {r.tp_cpu.other:.2f}/{r.lat_cpu.other:.2f} CPU s"
        + (" (disturbed)" if r.disturbed else "")
    )


def _report(args: argparse.Namespace, results: list[Result]) -> str:
    out = [
        f"Kuda fan-out: {args.sockets} sockets on one channel over {args.instances} instances "
        f"(+1 in-process writer); {args.events} events for throughput; "
        f"{args.rate:g} events/s for {args.seconds:g} s for latency",
        f"machine: {describe_machine()}",
        f"code: {code_version()}",
        "",
        render(results, args.mode_list),
    ]
    for r in results:
        for phase, use in (("throughput", r.tp_cpu), ("latency", r.lat_cpu)):
            if use.top_other:
                out.append(f"other CPU ({r.mode} #{r.run}, {phase}): {use.top_other}")
        for note in r.notes:
            out.append(f"note ({r.mode} #{r.run}): {note}")
        for line in r.server_log_errors[:10]:
            out.append(f"server log ({r.mode} #{r.run}): {line}")
        if len(r.server_log_errors) > 10:
            out.append(f"... and {len(r.server_log_errors) - 10} more server log lines")
    return "\n".join(out)


def _raise_fd_limit(sockets: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * sockets + 512))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def cli() -> None:
    uvloop = _uvloop()
    if sys.argv[1:] == ["--client-worker"]:
        runner = uvloop.run if uvloop is not None else asyncio.run
        with contextlib.suppress(KeyboardInterrupt):
            runner(client_worker())
        return
    args = parse_args()
    try:
        code = uvloop.run(main(args)) if uvloop is not None else asyncio.run(main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped and the database dropped", file=sys.stderr)
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    cli()
