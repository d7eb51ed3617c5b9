"""What both Redis brokers do with subscription confirmations: wake the callers waiting for
them, and ask the hub to resync once a fresh set of subscriptions is active (or when redis-py
re-subscribed on its own after a reconnect, which it does without telling us)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.brokers.base import ResyncHandler

log = logging.getLogger("kuda.broker")


class Confirmations:
    def __init__(self) -> None:
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._on_resync: ResyncHandler | None = None
        self._resync: asyncio.Task[None] | None = None
        self._again = False

    def bind(self, on_resync: ResyncHandler) -> None:
        self._on_resync = on_resync

    def waiter(self, key: bytes) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        return waiter

    def forget(self, key: bytes, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(key)
        if waiters and waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(key, None)

    def confirmed(self, key: bytes) -> bool:
        """Wake the waiters of `key`; False if nobody was waiting for it."""
        waiters = self._waiters.pop(key, [])
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return bool(waiters)

    def release_all(self) -> None:
        """The connection is gone: nobody should wait for a confirmation any longer."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiters.clear()

    def request_resync(self) -> None:
        """Run the hub's resync now, or once more after the one that is running (requests
        arriving while it runs coalesce into that one extra pass)."""
        if self._on_resync is None:
            return
        if self._resync is not None and not self._resync.done():
            self._again = True
            return
        self._resync = asyncio.ensure_future(self._run_resync())

    async def _run_resync(self) -> None:
        assert self._on_resync is not None
        while True:
            self._again = False
            try:
                await self._on_resync()
            except Exception:
                log.exception("resync after a broker (re)subscription failed")
            if not self._again:
                return

    async def stop(self) -> None:
        self.release_all()
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resync
