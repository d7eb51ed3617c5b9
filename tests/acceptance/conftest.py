"""The acceptance suite's deployment: two real `kuda serve` processes on the test database and
the shared Redis (a prefix of their own), shared by every module of this package; a module that
needs other settings (small limits) starts its own pair with `deployment(...)`.

Tests here talk only HTTP and WebSocket to those processes, as a client author who read
PROTOCOL.md and nothing else would (docs/decisions.md D40)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.cluster import Cluster, forget_prefix
from tests.helpers import PASSWORD, Account, login, new_email
from tests.live import WsClient, ws_connect
from tests.procs import Server, run_kuda
from tests.services import REDIS_URL, empty_tables

pytestmark = pytest.mark.slow

SHARED_ENV = {
    "JOBS_INTERVAL_S": "0.3",
    "RIDE_AUTOCOMPLETE_S": "2",
    "DRAIN_S": "0",
    "AUTH_REQUESTS_PER_IP": "100000",
}
"""The shared pair's settings: jobs looked for often (tests set `JOBS_INTERVAL_S` low, as the
contract says), rides auto-completed 2 s after departure, fast shutdown, and no per-IP auth limit
(every test signs up from 127.0.0.1). The write and socket limits keep their defaults."""


@dataclass
class Deployment:
    """Two instances `a` and `b` (and any `extra` ones) on one PostgreSQL and one Redis."""

    cluster: Cluster
    a: Server
    b: Server
    extra: dict[str, Server] = field(default_factory=dict)

    @property
    def instances(self) -> tuple[Server, Server]:
        return self.a, self.b

    def ws_url(self, server: Server) -> str:
        return f"ws://127.0.0.1:{server.port}/ws"

    def socket(self, server: Server, token: str, **kw: Any) -> Any:
        """`async with d.socket(d.b, token) as ws:` a socket whose `welcome` was read."""
        return _welcomed(self.ws_url(server), token, **kw)

    async def admin(self) -> Account:
        """A fresh administrator, made with `kuda create-admin` as an operator would."""
        email = new_email()
        args = ("create-admin", "--email", email, "--password", PASSWORD)
        done = await asyncio.to_thread(run_kuda, *args, env=self.cluster.env())
        assert done.returncode == 0, done.stderr
        async with httpx.AsyncClient(base_url=self.a.base_url) as http:
            tokens = (await login(http, email)).json()
            me = (
                await http.get("/api/v1/users/me", headers=_bearer(tokens["access_token"]))
            ).json()
        return Account(me, email, tokens["access_token"], tokens["refresh_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def _welcomed(url: str, token: str, **kw: Any) -> AsyncIterator[WsClient]:
    async with ws_connect(url, token, **kw) as ws:
        await ws.expect("welcome")
        yield ws


@contextlib.asynccontextmanager
async def deployment(
    database_url: str,
    tmp: Path,
    redis_url: str = REDIS_URL,
    extra: dict[str, dict[str, str]] | None = None,
    **env: str,
) -> AsyncIterator[Deployment]:
    """Start two instances `a` and `b` (`env` overrides their settings), and the `extra` ones
    (name -> their own overrides, in `Deployment.extra`), all at once, on one Redis; on exit
    stop them, drop their Redis keys and fail if one logged a traceback or an error."""
    cluster = Cluster(database_url, redis_url, tmp, factory=_no_in_process)
    names = {"a": {}, "b": {}, **(extra or {})}
    servers = {n: Server(cluster.env(**{**env, **e}), tmp / f"{n}.log") for n, e in names.items()}
    cluster.processes.extend(servers.values())
    try:
        await asyncio.gather(*(asyncio.to_thread(s.wait_ready) for s in servers.values()))
        others = {n: s for n, s in servers.items() if n not in ("a", "b")}
        yield Deployment(cluster, servers["a"], servers["b"], others)
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers.values()))
        await forget_prefix(cluster.redis_url, cluster.prefix)
    for server in servers.values():
        log = server.log()
        assert "Traceback" not in log, log
        assert [line for line in log.splitlines() if " ERROR " in line] == []


Frame = dict[str, Any]


async def events_until(
    ws: WsClient, until: str | Callable[[Frame], bool], timeout: float = 10.0
) -> list[Frame]:
    """The event frames received up to and including the first one named `until` (or for
    which `until(frame)` holds)."""
    done = until if callable(until) else lambda frame: frame["event"] == until
    seen: list[Frame] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await ws.recv(max(0.01, deadline - time.monotonic()))
        assert frame["type"] == "event", frame
        seen.append(frame)
        if done(frame):
            return seen


def notification_of(kind: str, **data: Any) -> Callable[[Frame], bool]:
    """A `notification.created` event of `kind` whose data includes `data`."""

    def check(frame: Frame) -> bool:
        if frame["event"] != "notification.created" or frame["data"]["kind"] != kind:
            return False
        return all(frame["data"]["data"].get(k) == v for k, v in data.items())

    return check


async def _no_in_process(**_: Any) -> Any:
    raise NotImplementedError("acceptance tests talk to processes only")


@pytest.fixture(scope="package", autouse=True)
async def _empty_tables_afterwards(db_conn: asyncpg.Connection) -> AsyncIterator[None]:
    """The suite's tests make fresh users and never clean up one by one: the tables are emptied
    once, after the package (and after its servers stopped), for the tests that follow."""
    yield
    await empty_tables(db_conn)


@pytest.fixture(scope="package")
async def kuda(
    database_url: str, redis_available: bool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    if not redis_available:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}")
    async with deployment(database_url, tmp_path_factory.mktemp("acceptance"), **SHARED_ENV) as d:
        yield d


@pytest.fixture
async def a(kuda: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kuda.a.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def b(kuda: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kuda.b.base_url, timeout=30) as http:
        yield http
