"""A client process for the peers benchmark: picows sockets that count numbered events.

Every peer sends text frames that carry `"n":<int>` and `"t":<float>` (the publisher's clock at
publish time); socket.io wraps them in its own framing (`42["tick",{...}]`) and needs the
Engine.IO handshake and heartbeat answers. Requests arrive as JSON lines on stdin (the same
protocol as kuda/loadtest/worker.py, so kuda.loadtest.pool drives it).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from kuda.loadtest.accounting import Histogram, SeqStream, Tally
from kuda.loadtest.worker import raise_fd_limit

N_KEY = b'"n":'
T_KEY = b'"t":'


def number(payload: bytes, key: bytes) -> bytes:
    i = payload.index(key) + len(key)
    j = i
    while payload[j] in b"0123456789.-e+":
        j += 1
    return payload[i:j]


class Client(WSListener):
    def __init__(self, worker: Worker, protocol: str) -> None:
        self.worker = worker
        self.socketio = protocol == "socketio"
        self.stream = SeqStream(0)
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.socketio and not self.ready.done():
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if self.socketio and not payload.startswith(b"42"):
                self._engineio(transport, payload)
                return
            w = self.worker
            try:
                n = int(number(payload, N_KEY))
                t = float(number(payload, T_KEY))
            except (ValueError, IndexError):
                w.unexpected += 1
                return
            w.events += 1
            w.latency.record(time.time() - t)
            self.stream.observe(n)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _engineio(self, transport: WSTransport, payload: bytes) -> None:
        if payload.startswith(b"0"):  # Engine.IO open: join the default namespace
            transport.send(WSMsgType.TEXT, b"40")
        elif payload.startswith(b"40") and not self.ready.done():
            self.ready.set_result(None)
        elif payload == b"2":  # Engine.IO ping
            transport.send(WSMsgType.TEXT, b"3")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closing:
            self.worker.dropped += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))


class Worker:
    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.events = 0
        self.dropped = 0
        self.failed = 0
        self.unexpected = 0
        self.error = ""
        self.latency = Histogram()

    async def open(self, urls: list[str], protocol: str, concurrency: int = 64) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(url: str) -> None:
            async with gate:
                try:
                    _, client = await ws_connect(
                        lambda: Client(self, protocol),
                        url,
                        websocket_handshake_timeout=30,
                    )
                    assert isinstance(client, Client)
                    self.clients.append(client)
                    await asyncio.wait_for(client.ready, 30)
                except Exception as exc:
                    self.failed += 1
                    self.error = self.error or repr(exc)

        await asyncio.gather(*(one(u) for u in urls))

    def stats(self) -> dict[str, Any]:
        return {
            "opened": len(self.clients),
            "ready": sum(c.ready.done() and not c.ready.exception() for c in self.clients),
            "failed": self.failed,
            "dropped": self.dropped,
            "events": self.events,
            "unexpected": self.unexpected,
            "error_example": self.error,
            "p99": self.latency.percentile(0.99) if self.latency.count else None,
        }

    def progress(self, last: int) -> dict[str, int]:
        return {
            "complete": sum(c.stream.complete(last) for c in self.clients),
            "streams": len(self.clients),
        }

    def report(self, last: int) -> dict[str, Any]:
        tally = Tally()
        for c in self.clients:
            tally.add(c.stream.tally(last))
        return {
            **self.stats(),
            "tally": tally.as_dict(),
            "latency": self.latency.to_dict(),
        }

    async def close(self) -> None:
        waits = []
        for c in self.clients:
            c.closing = True
            if c.transport is not None:
                c.transport.disconnect(graceful=False)
                waits.append(c.transport.wait_disconnected())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)

    async def handle(self, req: dict[str, Any]) -> Any:
        cmd = req["cmd"]
        if cmd == "open":
            await self.open(req["urls"], req["protocol"])
            return self.stats()
        if cmd == "stats":
            return self.stats()
        if cmd == "progress":
            return self.progress(int(req["last"]))
        if cmd == "report":
            return self.report(int(req["last"]))
        if cmd == "reset_latency":
            self.latency = Histogram()
            return {}
        if cmd == "close":
            await self.close()
            return {}
        raise ValueError(f"unknown command {cmd!r}")


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(req: dict[str, Any]) -> None:
        try:
            reply: dict[str, Any] = {"rid": req["rid"], "ok": await worker.handle(req)}
        except Exception as exc:
            reply = {"rid": req["rid"], "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
        sys.stdout.buffer.flush()

    while line := await reader.readline():
        req = orjson.loads(line)
        task = asyncio.ensure_future(answer(req))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if req["cmd"] == "close":
            await task
            break


if __name__ == "__main__":
    raise_fd_limit()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
