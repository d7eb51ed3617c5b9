"""Faults in the fan-out path, with real `kuda serve` processes writing through REST while
sockets on both instances follow the channel: Redis killed mid-stream, an instance SIGKILLed
mid-stream. Whatever committed reaches every subscriber, once, in order (PROTOCOL.md section 4).

Neighbours: tests/channels/test_multi_instance.py (one subscriber, events appended in-process
around a Redis outage; SIGTERM), tests/client/test_client_processes.py (the Python client
resuming on the same instance after SIGTERM/SIGKILL), tests/test_redis_modes.py (sentinel and
cluster failovers)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import asyncpg
import pytest

from tests.cluster import Cluster
from tests.faults.kuda import ChatWriter, Follower, client, publish_ride, wait_until
from tests.helpers import Account, signup
from tests.procs import Server
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

FOLLOWERS = 3  # sockets per instance
ENV = {"WRITE_RATE_PER_USER": "0", "SOCKETS_PER_USER": "0"}


async def _committed(db: str, channel: str) -> list[tuple[int, int]]:
    """(seq, message id) of every event committed on the channel, from PostgreSQL."""
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT seq, (data->>'id')::bigint AS id FROM events WHERE channel = $1 ORDER BY seq",
            channel,
        )
    finally:
        await conn.close()
    return [(int(r["seq"]), int(r["id"])) for r in rows]


async def _setup(cluster: Cluster) -> tuple[Server, Server, Account, int, str]:
    a = await cluster.process("a", **ENV)
    b = await cluster.process("b", **ENV)
    async with client(a.base_url) as http:
        driver = await signup(http)
        ride = await publish_ride(http, driver)
    return a, b, driver, int(ride["id"]), f"ride:{ride['id']}:chat"


def _ws(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def _delivered(count: int, followers: list[Follower]) -> None:
    await wait_until(
        lambda: _all(followers, lambda f: len(f.events) >= count), what=f"{count} events each"
    )


async def _all(followers: list[Follower], check: Callable[[Follower], bool]) -> bool:
    return all(check(f) for f in followers)


def _check_everything_once_in_order(
    followers: list[Follower], committed: list[tuple[int, int]], writers: list[ChatWriter]
) -> None:
    head = len(committed)
    assert [seq for seq, _ in committed] == list(range(1, head + 1))
    ids = [message for _, message in committed]
    acked = [m for w in writers for m in w.acked]
    assert set(acked) <= set(ids), "a message acknowledged with 201 has no event"
    for follower in followers:
        assert follower.seqs == list(range(1, head + 1)), (follower.url, follower.closes)
        assert [int(e["data"]["id"]) for e in follower.events] == ids


async def test_redis_killed_mid_stream_loses_nothing(
    cluster_factory: Callable[..., Cluster], redis_server: RedisServer, db: str
) -> None:
    cluster = cluster_factory(redis_server.url)
    a, b, driver, ride_id, channel = await _setup(cluster)
    followers = [
        await Follower(_ws(server), driver.access_token, channel).start()
        for server in (a, b)
        for _ in range(FOLLOWERS)
    ]
    writers = [ChatWriter(s.base_url, driver, ride_id, name) for s, name in ((a, "a"), (b, "b"))]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in writers]
    try:
        await _delivered(30, followers)
        redis_server.kill()
        before = sum(len(w.acked) for w in writers)
        await wait_until(
            lambda: _acked_more(writers, before + 30), what="writes committed while Redis is down"
        )
        during = sum(len(w.acked) for w in writers) - before
        redis_server.start()  # the same port: the instances reconnect by themselves
        after = sum(len(w.acked) for w in writers)
        await wait_until(lambda: _acked_more(writers, after + 30), what="writes after Redis")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    committed = await _committed(db, channel)
    try:
        for follower in followers:
            await follower.wait_for(len(committed))
        await asyncio.sleep(1.0)  # a late duplicate would show up here
    finally:
        for follower in followers:
            await follower.close()
    _check_everything_once_in_order(followers, committed, writers)
    assert all(f.closes == [] for f in followers), "a socket was closed by the Redis outage"
    statuses: dict[str, int] = {}
    for w in writers:
        for status, n in w.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    assert set(statuses) <= {"201", "503"}, statuses
    print(f"redis outage: {len(committed)} events, {during} committed while Redis was down, "
          f"statuses {statuses}")  # fmt: skip


async def _acked_more(writers: list[ChatWriter], count: int) -> bool:
    return sum(len(w.acked) for w in writers) >= count


async def test_an_instance_sigkilled_mid_stream_loses_nothing(
    cluster_factory: Callable[..., Cluster], redis_server: RedisServer, db: str
) -> None:
    """A's sockets see the TCP connection drop (no close frame) and resume on B with `since`;
    what A committed and never published (killed between commit and publish) still arrives,
    through B's relay and resync."""
    cluster = cluster_factory(redis_server.url)
    a, b, driver, ride_id, channel = await _setup(cluster)
    followers = [
        await Follower(_ws(server), driver.access_token, channel, fallback=_ws(b)).start()
        for server in (a, b)
        for _ in range(FOLLOWERS)
    ]
    writers = [ChatWriter(s.base_url, driver, ride_id, name) for s, name in ((a, "a"), (b, "b"))]
    writers[0].stop_on_transport_error = True
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop, pause_s=0.005)) for w in writers]
    try:
        await _delivered(30, followers)
        await asyncio.to_thread(a.stop, signal.SIGKILL)
        after = sum(len(w.acked) for w in writers)
        await wait_until(lambda: _acked_more(writers, after + 30), what="writes on B after")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    committed = await _committed(db, channel)
    try:
        for follower in followers:
            await follower.wait_for(len(committed))
        await asyncio.sleep(1.0)
    finally:
        for follower in followers:
            await follower.close()
    _check_everything_once_in_order(followers, committed, writers)
    moved = followers[:FOLLOWERS]
    assert all(len(f.closes) == 1 and f.url == _ws(b) for f in moved)
    assert all(f.closes == [] for f in followers[FOLLOWERS:])
    print(f"instance killed: {len(committed)} events, A acknowledged {len(writers[0].acked)}, "
          f"A's sockets closed with {[f.closes for f in moved]}, statuses "
          f"{[w.statuses for w in writers]}")  # fmt: skip
