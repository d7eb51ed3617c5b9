"""Three `kuda serve` processes run the jobs at once against one database (issue 9): every
reminder is stored and pushed exactly once, every overdue ride completed once, and a process
SIGKILLed in the middle of a reminder batch loses nothing and duplicates nothing.

The kill is made to land mid-batch, not by timing: the test holds the event counter of one
passenger's `user:` channel locked, so whichever instance claims that passenger's ride stops inside
its batch (rides locked, `ride_reminders` rows inserted, nothing committed). The test finds that
instance's backend waiting on the lock, maps its client port to the process, SIGKILLs it, then
lets go: the dead batch rolls back and the two other instances send it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import services
from tests.cluster import Cluster
from tests.faults.kuda import departure, wait_until
from tests.helpers import Account, signup
from tests.live import WsClient, ws_connect
from tests.procs import Server

pytestmark = pytest.mark.slow

RIDES = 30  # due for reminders: a driver and 3 passengers each
OVERDUE = 6  # due for auto-completion
ENV = {
    "JOBS_INTERVAL_S": "0.2",
    "JOBS_BATCH": "10",
    "WRITE_RATE_PER_USER": "0",
    "SEATS_HELD_PER_USER": "0",
    "SOCKETS_PER_USER": "0",
}


def _db_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets that process `pid` holds (from /proc, Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Inbox:
    """Every event frame one socket receives, collected in the background."""

    def __init__(self, ws: WsClient) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.ws.recv(timeout=3600)
            if frame["type"] == "event":
                self.events.append(frame)

    def reminders(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == "notification.created" and e["data"]["kind"] == "ride.reminder"
        ]

    def stop(self) -> None:
        self._task.cancel()


@pytest.fixture
async def cluster(
    cluster_factory: Callable[..., Cluster], redis_available: bool
) -> AsyncIterator[tuple[Server, list[Server]]]:
    if not redis_available:
        pytest.fail(f"Redis is not reachable at {services.REDIS_URL}")
    made = cluster_factory(services.REDIS_URL)
    front = await made.process("front", JOBS_ENABLED="false", **ENV)  # REST and sockets only
    workers = [await made.process(name, **ENV) for name in ("a", "b", "c")]
    yield front, workers
    for server in (front, *workers):
        if server.proc.poll() is None:
            assert "Traceback" not in server.log(), server.log()


async def _ride(http: httpx.AsyncClient, driver: Account) -> int:
    body = {"origin": "Innopolis", "destination": "Kazan", "departure_at": departure(72),
            "seats_total": 4, "instant_booking": True}  # fmt: skip
    r = await http.post("/api/v1/rides", json=body, headers=driver.headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _book(http: httpx.AsyncClient, rider: Account, ride_id: int) -> None:
    r = await http.post(
        f"/api/v1/rides/{ride_id}/bookings", json={"seats": 1}, headers=rider.headers
    )
    assert r.status_code == 201, r.text


async def _setup(
    http: httpx.AsyncClient,
) -> tuple[list[Account], Account, dict[int, set[int]], list[int]]:
    """Drivers and riders (the last rider, "held", books one ride only); rides due for reminders
    with their expected recipients, and rides that will be overdue."""
    people = [await signup(http, display_name=f"User {i}") for i in range(9)]
    drivers, riders, held = people[:3], people[3:8], people[8]
    expected: dict[int, set[int]] = {}
    for i in range(RIDES):
        driver = drivers[i % 3]
        ride_id = await _ride(http, driver)
        passengers = [riders[(i + k) % 5] for k in range(3)]
        for rider in passengers:
            await _book(http, rider, ride_id)
        expected[ride_id] = {driver.id, *(p.id for p in passengers)}
    await _book(http, held, next(iter(expected)))
    expected[next(iter(expected))].add(held.id)
    overdue = []
    for i in range(OVERDUE):
        ride_id = await _ride(http, drivers[0])
        await _book(http, riders[i % 5], ride_id)
        overdue.append(ride_id)
    return people, held, expected, overdue


async def _blocked_backend(pg: asyncpg.Connection, holder: int) -> int:
    """The client port of the backend waiting on the lock `holder` holds."""
    port: int | None = None

    async def waiting() -> bool:
        nonlocal port
        port = await pg.fetchval(
            "SELECT client_port FROM pg_stat_activity "
            "WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1",
            holder,
        )
        return port is not None

    await wait_until(waiting, 60, "an instance's batch waiting on the held counter")
    assert port is not None
    return port


async def test_three_instances_send_each_reminder_once_and_a_killed_batch_is_redone(
    cluster: tuple[Server, list[Server]], db: str
) -> None:
    front, workers = cluster
    ws_url = front.base_url.replace("http", "ws", 1) + "/ws"
    async with httpx.AsyncClient(base_url=front.base_url, timeout=60) as http:
        people, held, expected, overdue = await _setup(http)
    async with contextlib.AsyncExitStack() as stack:
        inboxes: dict[int, Inbox] = {}
        for person in people:
            ws = await stack.enter_async_context(ws_connect(ws_url, person.access_token))
            await ws.expect("welcome")
            await ws.request({"op": "subscribe", "channel": f"user:{person.id}"})
            if person is people[0]:  # the driver of the overdue rides watches them
                for ride_id in overdue:
                    await ws.request({"op": "subscribe", "channel": f"ride:{ride_id}"})
            inboxes[person.id] = Inbox(ws)

        pg = await asyncpg.connect(db)
        lock = await asyncpg.connect(db)
        try:
            holder = await lock.fetchval("SELECT pg_backend_pid()")
            tx = lock.transaction()
            await tx.start()
            await lock.execute(
                "SELECT 1 FROM channel_seqs WHERE channel = $1 FOR UPDATE", f"user:{held.id}"
            )
            # Everything due at once, as after downtime: 121 reminders, 6 rides to complete.
            await pg.execute(
                "UPDATE rides SET departure_at = now() + interval '30 minutes' "
                "WHERE id = ANY($1::bigint[])",
                list(expected),
            )
            await pg.execute(
                "UPDATE rides SET departure_at = now() - interval '7 hours' "
                "WHERE id = ANY($1::bigint[])",
                overdue,
            )
            flipped = time.monotonic()
            port = await _blocked_backend(pg, holder)
            victim = next(w for w in workers if port in _db_ports(w.proc.pid))
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            await tx.rollback()

            total = sum(len(users) for users in expected.values())

            async def all_sent() -> bool:
                return bool(await pg.fetchval("SELECT count(*) FROM ride_reminders") == total)

            await wait_until(all_sent, 60, f"{total} reminders")
            took = time.monotonic() - flipped
            print(f"{total} reminders by 3 instances, one SIGKILLed mid-batch: {took:.2f} s")
            rows = await pg.fetch(
                "SELECT user_id, (data->>'ride_id')::bigint AS ride_id, count(*) AS n "
                "FROM notifications WHERE kind = 'ride.reminder' GROUP BY 1, 2"
            )
            assert all(r["n"] == 1 for r in rows)
            got: dict[int, set[int]] = {}
            for r in rows:
                got.setdefault(r["ride_id"], set()).add(r["user_id"])
            assert got == expected  # exactly the due rides, exactly their people, none overdue

            async def pushed() -> bool:
                return all(
                    len(inboxes[uid].reminders()) >= sum(uid in us for us in expected.values())
                    for uid in inboxes
                )

            await wait_until(pushed, 60, "every reminder pushed")
            for uid, inbox in inboxes.items():
                rides = Counter(e["data"]["data"]["ride_id"] for e in inbox.reminders())
                assert rides == Counter(r for r, us in expected.items() if uid in us)

            async def completed() -> bool:
                events = [e for e in inboxes[people[0].id].events if e["event"] == "ride.completed"]
                return len(events) >= OVERDUE

            await wait_until(completed, 60, "the overdue rides completed")
            done = await pg.fetch(
                "SELECT channel, count(*) AS n FROM events WHERE event = 'ride.completed' "
                "GROUP BY channel"
            )
            assert {r["channel"]: r["n"] for r in done} == {f"ride:{i}": 1 for i in overdue}
            live = [e for e in inboxes[people[0].id].events if e["event"] == "ride.completed"]
            assert sorted(e["channel"] for e in live) == sorted(f"ride:{i}" for i in overdue)
        finally:
            for inbox in inboxes.values():
                inbox.stop()
            await pg.close()
            await lock.close()
