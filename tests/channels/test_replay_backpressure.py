"""A replay larger than the socket's write bound is paced, not punished (issue 8: a subscribe
with `since` far back wrote the whole replay at once, went over `WS_MAX_BUFFER_BYTES` and was
closed 4429; the client reconnected with the same `since` and was closed again, for ever)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from channels import append
from channels.events import revoke
from tests.helpers import signup
from tests.live import LiveServer, WsClient, ws_connect
from tests.procs import Server, kuda_env
from tests.services import JWT_SECRET

MAX_REPLAY = 1000  # the most a subscribe replays (PROTOCOL.md section 3)
EVENTS = MAX_REPLAY - 5  # committed before the subscribe
BLOB = "x" * 6000  # ~6 KB per event: ~6 MB of replay against a 16 KiB write bound
LATE = 5  # committed around the subscribe, replayed or live: since=0 stays recoverable


async def _receive_all(ws: WsClient, total: int) -> tuple[list[int], dict[str, Any]]:
    seqs: list[int] = []
    ack: dict[str, Any] | None = None
    while len(seqs) < total or ack is None:
        frame = await ws.recv(timeout=30)
        if frame["type"] == "subscribed":
            assert ack is None, frame
            ack = frame
            assert frame["seq"] == (seqs[-1] if seqs else 0), (frame, seqs[-3:])
        else:
            assert frame["type"] == "event", frame
            seqs.append(frame["seq"])
    assert ack is not None
    return seqs, ack


async def test_a_replay_over_the_write_bound_is_delivered_whole_to_a_slow_reader(
    live_factory: Callable[..., Any],
) -> None:
    live: LiveServer = await live_factory(ws_max_buffer_bytes=16 * 1024, replay_cache_bytes=0)
    async with httpx.AsyncClient(base_url=live.http) as http:
        user = await signup(http)
    channel = f"user:{user.id}"
    async with live.sessionmaker() as session:
        for i in range(EVENTS):
            await append(session, channel, "note", {"i": i, "blob": BLOB})
        await session.commit()

    async def late_writes() -> None:
        for i in range(LATE):
            async with live.sessionmaker() as session:
                await append(session, channel, "note", {"i": EVENTS + i})
                await session.commit()

    async with ws_connect(live.ws_url, user.access_token, max_size=2**20) as ws:
        await ws.expect("welcome")
        await ws.send({"op": "subscribe", "channel": channel, "since": 0, "id": "r"})
        writes = asyncio.create_task(late_writes())
        await asyncio.sleep(0.5)  # a slow reader: the server's write buffer fills meanwhile
        seqs, ack = await _receive_all(ws, EVENTS + LATE)
        await writes
        assert seqs == list(range(1, EVENTS + LATE + 1))  # every event, once, in order
        assert ack["recovered"] is True and ack["id"] == "r"
        assert (await ws.request({"op": "ping", "id": 1})) == {"type": "pong", "id": 1}
        async with live.sessionmaker() as session:  # and it follows the channel live
            await append(session, channel, "note", {"i": "live"})
            await session.commit()
        assert [e["seq"] for e in await ws.events(1)] == [EVENTS + LATE + 1]
        assert await ws.silent(0.2)

    # The same resubscribe again, from another socket: not a one-off.
    head = EVENTS + LATE + 1
    async with ws_connect(live.ws_url, user.access_token, max_size=2**20) as ws:
        await ws.expect("welcome")
        await ws.send({"op": "subscribe", "channel": channel, "since": head - MAX_REPLAY})
        await asyncio.sleep(0.5)
        seqs, ack = await _receive_all(ws, MAX_REPLAY)
        assert seqs == list(range(head - MAX_REPLAY + 1, head + 1))
        assert ack["seq"] == head and ack["recovered"] is True
        assert (await ws.request({"op": "ping"})) == {"type": "pong"}


async def test_a_peer_that_reads_nothing_during_a_replay_is_closed_too_slow(
    live_factory: Callable[..., Any],
) -> None:
    """Pacing waits for a reader, not for ever: no progress for `HEARTBEAT_S` closes the socket
    4429 (the keepalive may get there first: 1011), and the instance serves the next one."""
    live: LiveServer = await live_factory(
        ws_max_buffer_bytes=16 * 1024, replay_cache_bytes=0, heartbeat_s=1
    )
    async with httpx.AsyncClient(base_url=live.http) as http:
        user = await signup(http)
    channel = f"user:{user.id}"
    async with live.sessionmaker() as session:
        for i in range(MAX_REPLAY):
            await append(session, channel, "note", {"i": i, "blob": BLOB})
        await session.commit()
    async with ws_connect(
        live.ws_url, user.access_token, max_size=2**20, max_queue=1, ping_interval=None
    ) as ws:
        await ws.expect("welcome")
        await ws.send({"op": "subscribe", "channel": channel, "since": 0})
        await asyncio.sleep(4)  # reads nothing
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (4429, 1011)
    async with ws_connect(live.ws_url, user.access_token) as ws:
        await ws.expect("welcome")
        ack = await ws.request({"op": "subscribe", "channel": channel})
        assert ack["type"] == "subscribed" and ack["seq"] == MAX_REPLAY


async def test_a_replay_behind_more_live_events_than_a_socket_may_queue_is_too_slow(
    live_factory: Callable[..., Any],
) -> None:
    """While a replay is paced, the channel's live events wait behind it. A reader so slow
    that more than a socket's queue bound (1,000 frames) piles up there is closed 4429 (it
    resumes with `since`), rather than pinning every frame the channel gets meanwhile."""
    live: LiveServer = await live_factory(
        ws_max_buffer_bytes=16 * 1024, replay_cache_bytes=0, heartbeat_s=300
    )
    async with httpx.AsyncClient(base_url=live.http) as http:
        user = await signup(http)
    channel = f"user:{user.id}"
    async with live.sessionmaker() as session:
        for i in range(MAX_REPLAY):
            await append(session, channel, "note", {"i": i, "blob": BLOB})
        await session.commit()
    tallies = live.app.state.realtime.metrics.tallies
    async with ws_connect(
        live.ws_url, user.access_token, sock=_slow_socket(live), max_queue=1, ping_interval=None
    ) as ws:
        await ws.expect("welcome")
        await ws.send({"op": "subscribe", "channel": channel, "since": 0})
        assert (await ws.recv(timeout=10))["seq"] == 1  # the replay has started; now it stalls
        async with live.sessionmaker() as session:
            for i in range(1001):
                await append(session, channel, "note", {"live": i})
            await session.commit()
        async with asyncio.timeout(60):
            while tallies.overflows == 0:
                await asyncio.sleep(0.05)
        seqs = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = await ws.recv(timeout=30)
                assert frame["type"] == "event", frame  # closed before its ack
                seqs.append(frame["seq"])
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    assert seqs == list(range(2, len(seqs) + 2)) and seqs[-1] < MAX_REPLAY
    assert tallies.overflows == 1


def _slow_socket(live: LiveServer) -> socket.socket:
    """A client socket whose replay stalls at once: a 4 KiB receive buffer, and 536-byte
    segments so that the server's kernel send buffer stays small too."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect(("127.0.0.1", live.port))
    return sock


async def test_a_revocation_during_a_paced_replay_ends_the_replay_not_the_socket(
    live_factory: Callable[..., Any],
) -> None:
    live: LiveServer = await live_factory(
        ws_max_buffer_bytes=16 * 1024, replay_cache_bytes=0, heartbeat_s=300
    )
    async with httpx.AsyncClient(base_url=live.http) as http:
        user = await signup(http)
    channel = f"user:{user.id}"
    async with live.sessionmaker() as session:
        for i in range(MAX_REPLAY):
            await append(session, channel, "note", {"i": i, "blob": BLOB})
        await session.commit()
    async with ws_connect(
        live.ws_url, user.access_token, sock=_slow_socket(live), max_queue=1, ping_interval=None
    ) as ws:
        await ws.expect("welcome")
        await ws.send({"op": "subscribe", "channel": channel, "since": 0})
        assert (await ws.recv(timeout=10))["seq"] == 1  # the replay has started; now it stalls
        async with live.sessionmaker() as session:
            await revoke(session, channel, user.id)
            await session.commit()
        seqs = [1]
        while (frame := await ws.recv(timeout=30))["type"] == "event":
            seqs.append(frame["seq"])
        assert frame == {"type": "unsubscribed", "channel": channel, "reason": "forbidden"}
        assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] < MAX_REPLAY
        assert await ws.request({"op": "ping"}) == {"type": "pong"}  # no ack came; still open
    assert live.app.state.realtime.metrics.tallies.overflows == 0


async def test_without_the_raw_writer_a_replay_is_paced_by_the_frame_queue(
    tmp_path: Path, db: str
) -> None:
    """`WS_RAW_WRITER=false` (stock uvicorn send): the bound is a queue of 1,000 frames, which a
    full replay plus its ack went over (4429). Paced, it arrives whole."""
    server = Server(
        kuda_env(DATABASE_URL=db, JWT_SECRET=JWT_SECRET, WS_RAW_WRITER="false",
                 PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="1024"),
        tmp_path / "kuda.log",
    )  # fmt: skip
    try:
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            user = await signup(http)
        channel = f"user:{user.id}"
        conn = await asyncpg.connect(db)
        try:
            await conn.execute(_COMMITTED, channel, MAX_REPLAY, BLOB)
        finally:
            await conn.close()
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with ws_connect(url, user.access_token, max_size=2**20) as ws:
            await ws.expect("welcome")
            await ws.send({"op": "subscribe", "channel": channel, "since": 0})
            await asyncio.sleep(0.5)  # a slow reader
            seqs, ack = await _receive_all(ws, MAX_REPLAY)
            assert seqs == list(range(1, MAX_REPLAY + 1))
            assert ack["seq"] == MAX_REPLAY and ack["recovered"] is True
            assert await ws.request({"op": "ping"}) == {"type": "pong"}
    finally:
        await asyncio.to_thread(server.stop)


# Events committed (and marked published) by the test itself: seqs 1..$2 of channel $1.
_COMMITTED = """
WITH c AS (INSERT INTO channel_seqs (channel, seq) VALUES ($1, $2))
INSERT INTO events (channel, seq, event, data, published)
SELECT $1, g, 'note', jsonb_build_object('i', g, 'blob', $3::text), true
FROM generate_series(1, $2::bigint) AS g
"""
