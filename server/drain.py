"""Graceful drain on SIGTERM: stop being ready, then close sockets with 1012 a few at a time.

When uvicorn serves the app with its own signal handling (`kuda serve`, one or several workers),
the first SIGTERM does not stop the server at once. Instead:

1. `/readyz` answers 503 `draining`, so load balancers and Kubernetes stop routing new traffic
   here; new WebSocket handshakes are refused with 503 (the client tries another instance);
   HTTP requests keep being served.
2. Open sockets are closed with 1012 (restart: reconnect elsewhere and resume with `since`)
   spread evenly over `DRAIN_S` seconds, so their clients reconnect to the other instances over
   that window instead of all in the same second; never slower than `DRAIN_MIN_RATE` sockets
   per second, so a lightly loaded instance stops quickly.
3. uvicorn's own shutdown then runs (in-flight requests finish, the lifespan stops).

A second SIGTERM or SIGINT skips what is left of the window. Embedded in another server (tests,
other ASGI servers), nothing is hooked and shutdown is that server's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("kuda.drain")

TICK_S = 0.1

SignalHandler = Callable[[int, FrameType | None], Any]


class Sockets(Protocol):
    refusing: bool  # True: new handshakes are refused with 503

    def open_count(self) -> int: ...

    def restart_some(self, n: int) -> int:
        """Close up to n open sockets with 1012; returns how many were closed."""


class Drain:
    def __init__(self, window_s: float, sockets: Sockets, min_rate: float = 0.0) -> None:
        self.window_s = window_s
        self.min_rate = min_rate
        self._sockets = sockets
        self.draining = False
        self._uvicorn_exit: SignalHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> bool:
        """Take over SIGTERM from uvicorn (only if uvicorn installed its handler: the app is
        being served by `uvicorn.Server` in this process's main thread)."""
        current = signal.getsignal(signal.SIGTERM)
        owner = getattr(current, "__self__", None)
        if not callable(current) or type(owner).__module__ != "uvicorn.server":
            return False
        self._uvicorn_exit = current
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_signal)  # SIGINT stays uvicorn's: stop at once
        return True

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only hand over to the loop (or to uvicorn on a repeat).
        if self.draining or self._loop is None:
            self._exit(sig, frame)
            return
        self.draining = True  # /readyz answers 503 from now on
        self._loop.call_soon_threadsafe(self._start, sig)

    def _start(self, sig: int) -> None:
        self._task = asyncio.ensure_future(self._run(sig))

    def _exit(self, sig: int, frame: FrameType | None = None) -> None:
        if self._uvicorn_exit is not None:
            self._uvicorn_exit(sig, frame)

    async def _run(self, sig: int) -> None:
        try:
            closed = await self.close_spread()
            log.info("drained: %d sockets closed over %.1f s", closed, self.window_s)
        finally:
            self._exit(sig)

    async def close_spread(self) -> int:
        """Close every socket with 1012, evenly over the window (all at once if it is 0)."""
        self.draining = True
        self._sockets.refusing = True
        started = time.monotonic()
        # Sockets still open when a tick comes are closed at the rate that empties the
        # instance by the end of the window (re-planned each tick, as sockets also leave).
        closed, owed = 0, 0.0
        while True:
            left = self.window_s - (time.monotonic() - started)
            pending = self._sockets.open_count()
            if pending == 0:
                return closed
            if left <= TICK_S:
                return closed + self._sockets.restart_some(pending)
            # Fractions carry over (40 sockets in 6 s is 0.67 a tick).
            owed += max(pending / left, self.min_rate) * TICK_S
            if owed >= 1:
                share = int(owed)
                owed -= share
                closed += self._sockets.restart_some(share)
            await asyncio.sleep(TICK_S)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
