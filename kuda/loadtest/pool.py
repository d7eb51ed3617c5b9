"""The coordinator's side of the client processes (kuda/loadtest/worker.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import Sequence
from typing import Any

import orjson

WORKER = [sys.executable, "-m", "kuda.loadtest.worker"]


class WorkerProc:
    def __init__(self, argv: list[str] | None = None) -> None:
        self.argv = argv or WORKER
        self.proc: asyncio.subprocess.Process | None = None
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,
        )
        self._reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply: dict[str, Any] = orjson.loads(line)
            fut = self._replies.pop(int(reply["rid"]), None)
            if fut is None or fut.done():
                continue
            if "error" in reply:
                fut.set_exception(RuntimeError(f"client process: {reply['error']}"))
            else:
                fut.set_result(reply["ok"])
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(RuntimeError("client process exited"))

    async def call(self, cmd: str, timeout: float | None = None, **kw: Any) -> Any:  # noqa: ASYNC109
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        proc.stdin.write(orjson.dumps({"rid": rid, "cmd": cmd, **kw}) + b"\n")
        await proc.stdin.drain()
        return await asyncio.wait_for(fut, timeout)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.call("close", timeout=15)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()


class Pool:
    def __init__(self, size: int, argv: list[str] | None = None) -> None:
        self.workers = [WorkerProc(argv) for _ in range(size)]

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def split(self, items: Sequence[Any]) -> list[list[Any]]:
        n = len(self.workers)
        return [list(items[i::n]) for i in range(n)]

    async def each(self, cmd: str, timeout: float | None = None, **kw: Any) -> list[Any]:  # noqa: ASYNC109
        return list(await asyncio.gather(*(w.call(cmd, timeout, **kw) for w in self.workers)))

    async def scatter(
        self,
        cmd: str,
        key: str,
        parts: list[Any],
        timeout: float | None = None,  # noqa: ASYNC109
        **kw: Any,
    ) -> list[Any]:
        calls = (
            w.call(cmd, timeout, **{key: p}, **kw) for w, p in zip(self.workers, parts, strict=True)
        )
        return list(await asyncio.gather(*calls))

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers))
