"""A client process of `kuda loadtest`: holds its share of the sockets and answers the
coordinator's requests (one JSON object per line on stdin; replies on stdout, matched by `rid`).

Sockets are picows clients (Cython, on uvloop when installed): at tens of thousands of frames a
second the tool must not be the bottleneck, so event frames are sliced (`frames.py`) rather than
decoded, and the coordinator shows each client process's CPU next to the servers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import sys
import time
from collections import Counter
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from kuda.loadtest import frames
from kuda.loadtest.accounting import Histogram, SeqStream, Tally

HANDSHAKE_TIMEOUT_S = 30.0
READ_BUFFER = 4096  # the client's read buffer per socket (picows default 16 KiB)
RECONNECT_DELAY_S = (0.05, 0.5)  # first reconnect after a jittered pause in this range


class Stats:
    """Everything one process counts; `snapshot()` is what the coordinator polls."""

    def __init__(self) -> None:
        self.opened = 0
        self.failed = 0
        self.ready = 0  # sockets whose subscriptions are all acknowledged
        self.open_now = 0
        self.dropped = 0  # disconnects the tool did not ask for
        self.close_codes: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_example = ""
        self.events = 0
        self.pongs = 0
        self.reconnects = 0
        self.recovered = 0
        self.unrecovered = 0
        self.latency = Histogram()  # event `at` -> received
        self.connect = Histogram()  # TCP connect -> welcome
        self.subscribe = Histogram()  # subscribe sent -> subscribed
        self.resume = Histogram()  # disconnected -> resubscribed (recovered)
        self.cycles = 0  # churn: connect, subscribe, close

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        if not self.error_example:
            self.error_example = example[:300]

    def snapshot(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "failed": self.failed,
            "ready": self.ready,
            "open_now": self.open_now,
            "dropped": self.dropped,
            "events": self.events,
            "pongs": self.pongs,
            "reconnects": self.reconnects,
            "recovered": self.recovered,
            "unrecovered": self.unrecovered,
            "cycles": self.cycles,
            "close_codes": {str(k): v for k, v in self.close_codes.items()},
            "errors": dict(self.errors),
            "error_example": self.error_example,
            "p99": self.latency.percentile(0.99) if self.latency.count else None,
        }


class Session:
    """One virtual client: its credentials, channels and what it has seen of each, across
    reconnects."""

    __slots__ = (
        "conn",
        "disconnected_at",
        "index",
        "is_ready",
        "pending",
        "resume",
        "stopping",
        "streams",
        "subs",
        "token",
        "urls",
        "waiter",
    )

    def __init__(self, spec: dict[str, Any], resume: bool) -> None:
        self.urls: list[str] = list(spec["urls"])
        self.index = 0
        self.token: str = spec["token"]
        self.subs: list[tuple[str, int | None]] = [(c, s) for c, s in spec["subs"]]
        self.streams: dict[str, SeqStream] = {}
        self.pending: dict[str, float] = {}  # channel -> when its subscribe was sent
        self.conn: Conn | None = None
        self.resume = resume
        self.stopping = False
        self.disconnected_at: float | None = None
        self.is_ready = False
        self.waiter: asyncio.Future[None] | None = None  # set once every subscribe is acked


class Conn(WSListener):
    """One WebSocket connection of a session."""

    def __init__(self, worker: Worker, session: Session, started: float) -> None:
        self.worker = worker
        self.session = session
        self.started = started
        self.transport: WSTransport | None = None
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if frames.is_event(payload):
                self._event(payload)
            else:
                self._control(payload)
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code().value)
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _event(self, payload: bytes) -> None:
        stats = self.worker.stats
        stats.events += 1
        try:
            info = frames.parse_event(payload)
        except (ValueError, IndexError):
            stats.error("unparsable event", payload[:200].decode(errors="replace"))
            return
        n = info.seq if info.seq is not None else info.mark
        if n is None:
            return  # not one the tool counts (presence, someone else's ride on the board)
        stats.latency.record(time.time() - info.at)
        stream = self.session.streams.get(info.channel)
        if stream is None:
            stream = self.session.streams[info.channel] = SeqStream(0)
        stream.observe(n)

    def _control(self, payload: bytes) -> None:
        stats = self.worker.stats
        try:
            frame: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            stats.error("unparsable frame", payload[:200].decode(errors="replace"))
            return
        kind = frame.get("type")
        if kind == "welcome":
            self._welcome()
        elif kind == "subscribed":
            self._subscribed(frame)
        elif kind == "pong":
            stats.pongs += 1
        elif kind == "error":
            stats.error(f"error {frame.get('code')}", payload.decode(errors="replace"))
            if not self.welcomed.done():
                self.welcomed.set_exception(RuntimeError(f"refused: {frame}"))
        elif kind == "unsubscribed":
            stats.error("unsubscribed", payload.decode(errors="replace"))

    def _welcome(self) -> None:
        now = time.monotonic()
        session = self.session
        self.worker.stats.connect.record(now - self.started)
        if not self.welcomed.done():
            self.welcomed.set_result(None)
        assert self.transport is not None
        for channel, since in session.subs:
            stream = session.streams.get(channel)
            op: dict[str, Any] = {"op": "subscribe", "channel": channel}
            if stream is not None and session.resume:
                op["since"] = stream.last
            elif since is not None:
                op["since"] = since
                session.streams[channel] = SeqStream(since)
            session.pending[channel] = now
            self.transport.send(WSMsgType.TEXT, orjson.dumps(op))

    def _subscribed(self, frame: dict[str, Any]) -> None:
        stats = self.worker.stats
        session = self.session
        channel = str(frame.get("channel"))
        sent = session.pending.pop(channel, None)
        now = time.monotonic()
        if sent is not None:
            stats.subscribe.record(now - sent)
        seq = frame.get("seq")
        stream = session.streams.get(channel)
        if stream is None:
            session.streams[channel] = SeqStream(int(seq) if isinstance(seq, int) else 0)
        elif session.disconnected_at is not None:
            if frame.get("recovered"):
                stats.recovered += 1
                stats.resume.record(now - session.disconnected_at)
            else:  # a real client refetches by REST; the gap is not the socket's to fill
                stats.unrecovered += 1
                if isinstance(seq, int):
                    stream.last = max(stream.last, seq)
        if not session.pending:
            session.disconnected_at = None
            if not session.is_ready:
                session.is_ready = True
                stats.ready += 1
            if session.waiter is not None and not session.waiter.done():
                session.waiter.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        worker, session = self.worker, self.session
        stats = worker.stats
        stats.open_now -= 1
        if self.close_code is not None:
            stats.close_codes[self.close_code] += 1
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"closed {self.close_code}"))
        if session.conn is self:
            session.conn = None
        if session.stopping:
            return
        stats.dropped += 1
        session.pending.clear()
        if session.is_ready:
            session.is_ready = False
            stats.ready -= 1
        if session.resume:
            if session.disconnected_at is None:
                session.disconnected_at = time.monotonic()
            if worker.hold_reconnects:
                worker.parked.append(session)
            else:
                worker.spawn(worker.reconnect(session))


class Worker:
    def __init__(self) -> None:
        self.stats = Stats()
        self.sessions: list[Session] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.hold_reconnects = False  # resume: park dropped sessions until `release`
        self.parked: list[Session] = []
        self._expect: dict[str, int] = {}  # progress: the last seq expected per channel
        self._complete: set[int] = set()  # progress: streams (ids) known to be complete

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connect(self, session: Session) -> Conn:
        """Open a connection on the session's current URL and wait for its welcome (the
        subscribes go out from the welcome handler)."""
        url = session.urls[session.index % len(session.urls)]
        started = time.monotonic()
        conn: Conn | None = None

        def factory() -> Conn:
            nonlocal conn
            conn = Conn(self, session, started)
            return conn

        await ws_connect(
            factory,
            url,
            extra_headers={"Authorization": f"Bearer {session.token}"},
            websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            read_buffer_init_size=READ_BUFFER,
        )
        assert conn is not None
        self.stats.open_now += 1
        session.conn = conn
        await asyncio.wait_for(conn.welcomed, HANDSHAKE_TIMEOUT_S)
        return conn

    async def open(self, specs: list[dict[str, Any]], concurrency: int, resume: bool) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(spec: dict[str, Any]) -> None:
            session = Session(spec, resume)
            self.sessions.append(session)
            async with gate:
                try:
                    await self.connect(session)
                    self.stats.opened += 1
                except Exception as exc:
                    self.stats.failed += 1
                    self.stats.error(type(exc).__name__, repr(exc))
                    session.stopping = True
                    if session.conn is not None and session.conn.transport is not None:
                        session.conn.transport.disconnect(graceful=False)

        await asyncio.gather(*(one(s) for s in specs))

    async def reconnect(self, session: Session) -> None:
        """What a resuming client does: another URL, after a jittered pause that grows on
        each failure; subscribes with `since` = the last seq it holds (see `_welcome`)."""
        delay = random.uniform(*RECONNECT_DELAY_S)
        while not session.stopping:
            await asyncio.sleep(delay)
            session.index += 1
            self.stats.reconnects += 1
            try:
                await self.connect(session)
                return
            except Exception as exc:
                self.stats.error(f"reconnect {type(exc).__name__}", repr(exc))
                delay = min(delay * 2, 5.0) * random.uniform(0.8, 1.2)

    def release(self) -> int:
        """Every parked session reconnects now; its resume time counts from here. The stopped
        instance is back by then, so the sessions spread over every URL at random, as behind a
        load balancer (otherwise every client of the stopped instance would move to the next
        one and the restarted instance would sit idle)."""
        self.hold_reconnects = False
        parked, self.parked = self.parked, []
        now = time.monotonic()
        for session in parked:
            session.disconnected_at = now
            session.index = random.randrange(len(session.urls))
            self.spawn(self.reconnect(session))
        return len(parked)

    def ping(self) -> int:
        sent = 0
        for session in self.sessions:
            conn = session.conn
            if conn is not None and conn.transport is not None:
                conn.transport.send(WSMsgType.TEXT, b'{"op":"ping"}')
                sent += 1
        return sent

    async def churn(self, spec: dict[str, Any], seconds: float, concurrency: int) -> None:
        """Connect, subscribe, close, again, from `concurrency` loops for `seconds`."""
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < deadline:
                session = Session(spec, resume=False)
                session.index = random.randrange(len(session.urls))
                session.waiter = asyncio.get_running_loop().create_future()
                ok = False
                try:
                    await self.connect(session)
                    await asyncio.wait_for(session.waiter, HANDSHAKE_TIMEOUT_S)
                    self.stats.opened += 1
                    ok = True
                except Exception as exc:
                    self.stats.failed += 1
                    self.stats.error(type(exc).__name__, repr(exc))
                finally:
                    session.stopping = True
                    conn = session.conn
                    if conn is not None and conn.transport is not None:
                        conn.transport.send_close()
                        conn.transport.disconnect()
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(conn.transport.wait_disconnected(), 10)
                self.stats.cycles += ok

        await asyncio.gather(*(loop() for _ in range(concurrency)))

    def progress(self, expect: dict[str, int] | None) -> dict[str, int]:
        """How many streams hold every event up to the expected last seq of their channel.
        `expect` is sent once per wait and kept (None: the last one): the coordinator polls
        this ten times a second, and a map of thousands of channels is not free to send and
        parse each time. A stream once complete stays so, and is not checked again."""
        if expect is not None:
            self._expect, self._complete = expect, set()
        expect, known = self._expect, self._complete
        done = total = 0
        for session in self.sessions:
            for channel, stream in session.streams.items():
                last = expect.get(channel)
                if last is None:
                    continue
                total += 1
                if id(stream) in known:
                    done += 1
                elif stream.complete(last):
                    known.add(id(stream))
                    done += 1
        return {"complete": done, "streams": total}

    def report(self, expect: dict[str, int]) -> dict[str, Any]:
        tally = Tally()
        for session in self.sessions:
            for channel, stream in session.streams.items():
                tally.add(stream.tally(expect.get(channel)))
        s = self.stats
        return {
            **s.snapshot(),
            "tally": tally.as_dict(),
            "latency": s.latency.to_dict(),
            "connect": s.connect.to_dict(),
            "subscribe": s.subscribe.to_dict(),
            "resume": s.resume.to_dict(),
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        conns = []
        for session in self.sessions:
            session.stopping = True
            conn = session.conn
            if conn is not None and conn.transport is not None:
                conn.transport.disconnect(graceful=False)
                conns.append(conn.transport.wait_disconnected())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*conns, return_exceptions=True), 10)

    async def handle(self, req: dict[str, Any]) -> Any:
        cmd = req["cmd"]
        if cmd == "open":
            await self.open(req["specs"], int(req["concurrency"]), bool(req.get("resume")))
            return self.stats.snapshot()
        if cmd == "stats":
            return self.stats.snapshot()
        if cmd == "progress":
            return self.progress(req.get("expect"))
        if cmd == "report":
            return self.report(req["expect"])
        if cmd == "ping":
            return {"sent": self.ping()}
        if cmd == "churn":
            await self.churn(req["spec"], float(req["seconds"]), int(req["concurrency"]))
            return self.stats.snapshot()
        if cmd == "hold":
            self.hold_reconnects = True
            return {}
        if cmd == "release":
            return {"released": self.release()}
        if cmd == "rest":
            return await rest_mix(self, req)
        if cmd == "reset_latency":
            self.stats.latency = Histogram()
            return {}
        if cmd == "close":
            await self.close()
            return {}
        raise ValueError(f"unknown command {cmd!r}")


async def rest_mix(worker: Worker, req: dict[str, Any]) -> dict[str, Any]:
    """Closed-loop REST clients: `concurrency` loops for `seconds`, each picking an operation
    by weight. Returns per-operation counts, errors and latency histograms."""
    from kuda.loadtest import mix

    return await mix.run(req)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    out = sys.stdout.buffer
    tasks: set[asyncio.Task[None]] = set()

    async def answer(req: dict[str, Any]) -> None:
        try:
            reply: dict[str, Any] = {"rid": req["rid"], "ok": await worker.handle(req)}
        except Exception as exc:
            reply = {"rid": req["rid"], "error": f"{type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(reply) + b"\n")
        out.flush()

    try:
        while line := await reader.readline():
            req: dict[str, Any] = orjson.loads(line)
            task = asyncio.ensure_future(answer(req))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if req["cmd"] == "close":
                await task
                break
    finally:
        await worker.close()


def main() -> None:
    raise_fd_limit()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve())


if __name__ == "__main__":
    main()
