"""Servers under test: either given as URLs, or started by the tool (`--spawn N`).

Spawned instances are `kuda serve` processes of the installed package, on DATABASE_URL (or, with
`--fresh-db`, a throwaway database created next to it, migrated, and dropped at the end) and
REDIS_URL (with a REDIS_PREFIX of their own, whose keys are deleted at the end; the Redis is
never flushed). They run with the settings a benchmark needs: the per-user limits off
(`WRITE_RATE_PER_USER=0`, `SEATS_HELD_PER_USER=0`, a high `SOCKETS_PER_USER`, a high auth rate
per IP) and a high op rate per socket; everything else is the production default unless
`--server-env` says otherwise.

Spawned servers never outlive the tool: each runs in a process group of its own (a Ctrl-C in
the terminal reaches the tool, which stops them in order, not them), is told by the kernel to
stop (SIGTERM) when the tool dies however it dies, SIGKILL included (Linux: PR_SET_PDEATHSIG,
set before `kuda serve` is exec'd), and whatever is still running when the interpreter exits
(an exception, a second Ctrl-C during cleanup) is stopped by an atexit handler.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from kuda.loadtest import procstat

BENCH_ENV = {
    "WRITE_RATE_PER_USER": "0",
    "SOCKETS_PER_USER": "1000000",
    "SEATS_HELD_PER_USER": "0",
    "AUTH_REQUESTS_PER_IP": "1000000",
    "WS_OPS_PER_S": "1000",
    "WS_OPS_BURST": "1000",
    "ACCESS_TOKEN_TTL_S": "7200",
    "LOG_LEVEL": "warning",
}


# Sets the parent-death signal, checks the parent did not die before that, then becomes
# `kuda serve` (the setting survives exec). Started from the event loop's thread: the kernel
# sends the signal when the thread that forked exits, so never start instances from a worker
# thread.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
_running: set[Instance] = set()


def server_command(port: int) -> list[str]:
    serve = ["-m", "server", "serve", "--port", str(port)]
    if sys.platform != "linux":
        return [sys.executable, *serve]
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *serve]


@atexit.register
def _stop_leftovers() -> None:
    """Servers still running when the tool's interpreter exits: stopped now."""
    for inst in list(_running):
        inst.stop(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Instance:
    def __init__(self, env: dict[str, str], logdir: Path, name: str) -> None:
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            server_command(self.port),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        _running.add(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.base} exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.base + "/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.base} not ready:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal the server's process group (its own workers too), wait, then SIGKILL it."""
        proc = self.proc
        _running.discard(self)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Cluster:
    """The instances under test and their processes (when they are on this host)."""

    def __init__(self, bases: list[str], pids: list[int]) -> None:
        self.bases = bases
        self.pids = pids
        self.instances: list[Instance] = []
        self._cleanup: list[tuple[str, str]] = []
        self.logdir: Path | None = None

    @property
    def ws_urls(self) -> list[str]:
        return [b.replace("http", "ws", 1) + "/ws" for b in self.bases]

    @classmethod
    def existing(cls, urls: list[str], pids: list[int]) -> Cluster:
        bases = [u.rstrip("/") for u in urls]
        if not pids:
            for base in bases:
                parts = urlsplit(base)
                if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
                    pid = procstat.listener_pid(parts.port)
                    if pid is not None:
                        pids.append(pid)
        return cls(bases, pids)

    @classmethod
    async def spawn(cls, n: int, fresh_db: bool, extra_env: dict[str, str]) -> Cluster:
        env = dict(os.environ)
        database_url = env.get("DATABASE_URL")
        if not database_url or not env.get("REDIS_URL"):
            raise SystemExit(
                "kuda loadtest --spawn needs DATABASE_URL and REDIS_URL (two or more instances "
                "share PostgreSQL and Redis)"
            )
        cluster = cls([], [])
        cluster.logdir = Path(tempfile.mkdtemp(prefix="kuda-loadtest-"))
        try:
            if fresh_db:
                name = f"kuda_lt_{secrets.token_hex(4)}"
                env["DATABASE_URL"] = await create_database(database_url, name)
                cluster._cleanup.append(("db", database_url + "|" + name))
                migrate = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "server", "migrate"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if migrate.returncode != 0:
                    raise RuntimeError(f"kuda migrate failed:\n{migrate.stderr[-2000:]}")
            prefix = f"kuda-lt-{secrets.token_hex(4)}:"
            env["REDIS_PREFIX"] = prefix
            cluster._cleanup.append(("redis", env["REDIS_URL"] + "|" + prefix))
            env.setdefault("JWT_SECRET", secrets.token_urlsafe(36))
            env.update(BENCH_ENV)
            env.update(extra_env)
            for i in range(n):
                inst = Instance(env, cluster.logdir, f"instance-{i}")
                inst.start()
                cluster.instances.append(inst)
            await asyncio.gather(*(i.wait_ready() for i in cluster.instances))
        except BaseException:
            await cluster.close()
            raise
        cluster.bases = [i.base for i in cluster.instances]
        cluster.pids = [i.pid for i in cluster.instances]
        return cluster

    async def restart(self, index: int) -> float:
        """SIGTERM one spawned instance (its sockets are closed 1012), start it again on the
        same port; returns when it stopped (monotonic)."""
        inst = self.instances[index]
        await asyncio.to_thread(inst.stop)
        stopped = time.monotonic()
        inst.start()
        await inst.wait_ready()
        self.pids[index] = inst.pid
        return stopped

    async def close(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(i.stop) for i in self.instances))
        for kind, what in reversed(self._cleanup):
            url, name = what.split("|", 1)
            with contextlib.suppress(Exception):
                if kind == "db":
                    await drop_database(url, name)
                else:
                    await delete_keys(url, name)
        self._cleanup.clear()


def _pg_params(database_url: str) -> dict[str, object]:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    return {
        "user": url.username,
        "password": url.password,
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "database": "postgres",
    }


async def create_database(database_url: str, name: str) -> str:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    conn = await asyncpg.connect(**_pg_params(database_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(database_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**_pg_params(database_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_keys(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
    finally:
        await redis.aclose()
