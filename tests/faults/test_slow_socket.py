"""A socket that never reads is closed 4429 and slows nobody else (PROTOCOL.md section 5).

One `kuda serve` process; 20 sockets follow a ride chat while REST writes 2 KB messages. The
same load runs twice in the test: without, then beside a socket subscribed to the same channel
that never reads (a 4 KiB receive buffer and 536-byte segments, so that its backlog reaches
`WS_MAX_BUFFER_BYTES` within the run rather than filling megabytes of kernel buffers first).
The figures (delivery latency p50/p99 of the 20 readers in each run) are printed, not asserted:
on a shared 2-core machine a timing bound would fail for reasons that are not Kuda's
(docs/reliability.md has the figures). What is asserted is what a user notices: the stalled
socket is closed 4429 (counted by the server, since the close frame itself waits behind the
data the socket never read), no reader is, and every reader gets every event once, in order."""

from __future__ import annotations

import asyncio
import socket
import statistics
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.faults.kuda import ChatWriter, Follower, client, publish_ride, start_kuda, wait_until
from tests.helpers import signup

pytestmark = pytest.mark.slow

READERS = 20
MESSAGES = 150  # per run
BODY = 2000  # the largest chat message
BUFFER = 64 * 1024  # WS_MAX_BUFFER_BYTES


async def _write(writer: ChatWriter, count: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop, pause_s=0.01))
    target = len(writer.acked) + count

    async def enough() -> bool:
        if task.done():
            task.result()
        return len(writer.acked) >= target

    try:
        await wait_until(enough, what=f"{count} messages written")
    finally:
        stop.set()
        await task


def _latencies(followers: list[Follower], first: int, last: int) -> list[float]:
    out = []
    for f in followers:
        for event, at in zip(f.events, f.received_at, strict=True):
            if first <= event["seq"] <= last:
                out.append(at - datetime.fromisoformat(event["at"]).timestamp())
    return out


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


async def _overflows(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("kuda_ws_queue_overflows_total "):
            return float(line.split()[1])
    raise AssertionError("kuda_ws_queue_overflows_total is not on /metrics")


async def test_a_socket_that_never_reads_is_closed_4429_and_slows_nobody(
    tmp_path: Path, db: str
) -> None:
    server = await start_kuda(
        tmp_path,
        db,
        WS_MAX_BUFFER_BYTES=str(BUFFER),
        WRITE_RATE_PER_USER="0",
        SOCKETS_PER_USER="0",
    )
    ws_url = f"ws://127.0.0.1:{server.port}/ws"
    readers: list[Follower] = []
    try:
        async with client(server.base_url) as http:
            driver = await signup(http)
            ride = await publish_ride(http, driver)
            channel = f"ride:{ride['id']}:chat"
            for _ in range(READERS):
                readers.append(await Follower(ws_url, driver.access_token, channel).start())
            writer = ChatWriter(server.base_url, driver, int(ride["id"]), "w", body_size=BODY)

            await _write(writer, MESSAGES)  # the run without a stalled socket
            first = len(writer.acked)  # one writer, every write acknowledged: seqs 1..first
            for f in readers:
                await f.wait_for(first)
            assert await _overflows(http) == 0

            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # A small segment size keeps the server's kernel send buffer small too (it is sized
            # from the segment size): its backlog then lands in the server's write buffer.
            stalled.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            stalled.connect(("127.0.0.1", server.port))
            headers = {"Authorization": f"Bearer {driver.access_token}"}
            async with connect(
                ws_url, sock=stalled, additional_headers=headers, max_queue=1, ping_interval=None
            ) as idle:
                assert orjson.loads(await idle.recv())["type"] == "welcome"
                await idle.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
                assert orjson.loads(await idle.recv())["type"] == "subscribed"
                # From here on it reads nothing.
                await _write(writer, MESSAGES)  # the same run beside it
                last = len(writer.acked)
                for f in readers:
                    await f.wait_for(last)
                await wait_until(lambda: _is(http, 1.0), what="the stalled socket closed 4429")
                with pytest.raises(ConnectionClosed):  # and it is gone for the client too
                    while True:
                        await asyncio.wait_for(idle.recv(), 30)
            await asyncio.sleep(0.5)
            assert await _overflows(http) == 1  # only the stalled socket, none of the readers
            assert writer.statuses == {"201": last}
    finally:
        for f in readers:
            await f.close()
        await asyncio.to_thread(server.stop)

    for f in readers:
        assert f.seqs == list(range(1, last + 1))
        assert f.closes == []
    without = _latencies(readers, 1, first)
    beside = _latencies(readers, first + 1, last)
    print(
        f"\n{READERS} readers, {MESSAGES} x {BODY} B messages per run; "
        f"without a stalled socket: {_summary(without)}; beside one: {_summary(beside)}"
    )


async def _is(http: httpx.AsyncClient, value: float) -> bool:
    return await _overflows(http) == value
