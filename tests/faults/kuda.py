"""Helpers for fault tests: `kuda serve` processes on test-owned services, a REST client, and a
subscriber that records every event it is delivered (to check nothing durable was lost)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.helpers import Account
from tests.procs import Server, kuda_env
from tests.services import JWT_SECRET

# Short database timeouts so a stalled PostgreSQL is answered in seconds (defaults: README).
FAULT_ENV = {
    "DB_CONNECT_TIMEOUT_S": "2",
    "DB_POOL_TIMEOUT_S": "2",
    "DB_STATEMENT_TIMEOUT_S": "3",
    "DB_COMMAND_TIMEOUT_S": "4",
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "1024",
    "RELAY_INTERVAL_S": "0.5",
    "RESYNC_INTERVAL_S": "1",
}
# A request must be answered well within this, whatever the fault (the bound the tests hold the
# server to; the figures measured are in docs/reliability.md).
REQUEST_BOUND_S = 30.0


async def start_kuda(
    tmp: Path, database_url: str, name: str = "kuda", redis_url: str | None = None, **env: str
) -> Server:
    values = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, **FAULT_ENV, **env}
    if redis_url is not None:
        values["REDIS_URL"] = redis_url
    server = Server(kuda_env(**values), tmp / f"{name}.log")
    await asyncio.to_thread(server.wait_ready)
    return server


def client(base_url: str, *, keepalive: bool = True) -> httpx.AsyncClient:
    """`keepalive=False` for request loops: a kept-alive connection that the server closes as
    idle just as the next request goes out is a transport error that says nothing about Kuda."""
    limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base_url, timeout=REQUEST_BOUND_S, limits=limits)


def departure(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


async def publish_ride(http: httpx.AsyncClient, driver: Account, **fields: Any) -> dict[str, Any]:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_at": departure(),
            "seats_total": 4, "price": 200, **fields}  # fmt: skip
    r = await http.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    ride: dict[str, Any] = r.json()
    return ride


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


class Follower:
    """A socket that follows one channel and records every event it is delivered. When its
    instance goes away (a close, or the TCP connection dropping with no close frame) it resumes
    on `fallback` with `since` = the last seq it has, as a client SDK does."""

    def __init__(self, ws_url: str, token: str, channel: str, fallback: str | None = None) -> None:
        self.url, self.token, self.channel, self.fallback = ws_url, token, channel, fallback
        self.events: list[dict[str, Any]] = []
        self.received_at: list[float] = []  # time.time() when each event arrived
        self.closes: list[int | None] = []  # close codes seen (one per lost socket)
        self.acks: list[dict[str, Any]] = []
        self._conn: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def seqs(self) -> list[int]:
        return [int(e["seq"]) for e in self.events]

    async def start(self) -> Follower:
        await self._subscribe(self.url, None)
        self._task = asyncio.create_task(self._follow())
        return self

    async def _subscribe(self, url: str, since: int | None) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        self._conn = conn = await connect(url, additional_headers=headers, open_timeout=10)
        welcome = orjson.loads(await asyncio.wait_for(conn.recv(), 10))
        assert welcome["type"] == "welcome", welcome
        frame: dict[str, Any] = {"op": "subscribe", "channel": self.channel}
        if since is not None:
            frame["since"] = since
        await conn.send(orjson.dumps(frame).decode())
        while True:  # replayed events come first, then the ack
            reply = orjson.loads(await asyncio.wait_for(conn.recv(), 30))
            if reply["type"] == "subscribed":
                self.acks.append(reply)
                return
            self._record(reply)

    def _record(self, frame: dict[str, Any]) -> None:
        assert frame["type"] == "event" and frame["channel"] == self.channel, frame
        self.events.append(frame)
        self.received_at.append(time.time())

    async def _follow(self) -> None:
        while True:
            assert self._conn is not None
            try:
                async for raw in self._conn:
                    self._record(orjson.loads(raw))
            except ConnectionClosed:
                pass
            if self._stopping:
                return
            self.closes.append(self._conn.close_code)
            if self.fallback is None:
                return
            self.url = self.fallback
            await self._subscribe(self.url, self.seqs[-1] if self.events else 0)

    async def wait_for(self, head: int, timeout: float = 60.0) -> None:
        """Until the last event delivered has seq `head` (or more)."""
        await wait_until(
            _true(lambda: bool(self.events) and self.seqs[-1] >= head),
            timeout,
            f"{self.channel} up to seq {head} on {self.url}",
        )

    async def close(self) -> None:
        self._stopping = True
        if self._conn is not None:
            await self._conn.close()
        if self._task is not None:
            await self._task


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check()

    return probe


class ChatWriter:
    """Posts chat messages to one instance in a loop and remembers what the server acknowledged
    (201: committed, so its event must reach every subscriber)."""

    def __init__(
        self, base_url: str, account: Account, ride_id: int, tag: str, body_size: int = 0
    ) -> None:
        self.base_url, self.account, self.ride_id, self.tag = base_url, account, ride_id, tag
        self.padding = "x" * body_size
        self.acked: list[int] = []  # message ids
        self.statuses: dict[str, int] = {}
        self.stop_on_transport_error = False

    async def run(self, stop: asyncio.Event, pause_s: float = 0.02) -> None:
        url = f"/api/v1/rides/{self.ride_id}/messages"
        async with client(self.base_url, keepalive=False) as http:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    body = {"body": f"{self.tag} {n} {self.padding}"[:2000]}
                    r = await http.post(url, json=body, headers=self.account.headers)
                except httpx.TransportError:
                    self._count("transport error")
                    if self.stop_on_transport_error:
                        return
                    await asyncio.sleep(0.1)
                    continue
                self._count(str(r.status_code))
                if r.status_code == 201:
                    self.acked.append(int(r.json()["id"]))
                await asyncio.sleep(pause_s)

    def _count(self, key: str) -> None:
        self.statuses[key] = self.statuses.get(key, 0) + 1
