"""SIGTERM drains a real `kuda serve`: /readyz turns 503 at once, new sockets are refused, HTTP
keeps answering, and open sockets are closed with 1012 a few at a time over DRAIN_S instead of
all together; then the process exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels.codes import CloseCode
from server.drain import Drain
from tests import services
from tests.cluster import Cluster
from tests.helpers import signup
from tests.live import WsClient, ws_connect

pytestmark = pytest.mark.slow

SOCKETS = 40
DRAIN_S = 6


async def _closed_at(ws: WsClient) -> tuple[float, int | None]:
    with pytest.raises(ConnectionClosed):
        while True:
            await ws.conn.recv()
    return time.monotonic(), ws.conn.close_code


async def test_sigterm_spreads_1012_closes_over_the_window_while_unready(
    cluster_factory: Callable[..., Cluster], redis: Any
) -> None:
    cluster = cluster_factory(services.REDIS_URL)
    base = cluster.env
    drain = {"DRAIN_S": str(DRAIN_S), "DRAIN_MIN_RATE": "0", "SOCKETS_PER_USER": "0"}
    cluster.env = lambda: {**base(), **drain}  # type: ignore[method-assign]
    server = await cluster.process()
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        account = await signup(http)
        contexts = [ws_connect(url, account.access_token) for _ in range(SOCKETS)]
        sockets: list[WsClient] = [await ctx.__aenter__() for ctx in contexts]
        try:
            for ws in sockets:
                await ws.expect("welcome")
            assert (await http.get("/readyz")).status_code == 200
            watchers = [asyncio.create_task(_closed_at(ws)) for ws in sockets]
            server.proc.send_signal(signal.SIGTERM)

            deadline = time.monotonic() + 30
            while (ready := await http.get("/readyz")).status_code != 503:
                assert time.monotonic() < deadline, "never stopped being ready"
                await asyncio.sleep(0.05)
            assert ready.json() == {"status": "draining"}
            # While draining, HTTP is still served and new sockets go elsewhere.
            assert (await http.get("/healthz")).status_code == 200
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(url, account.access_token):
                    pass
            assert refused.value.response.status_code == 503

            first = await next(asyncio.as_completed(watchers))
            still_open = sum(1 for w in watchers if not w.done())
            results = [await w for w in watchers]
        finally:
            for ctx in contexts:
                await ctx.__aexit__(None, None, None)
    assert {code for _, code in results} == {CloseCode.RESTART}
    # When the first socket was closed, most of the others were still open: not all at once.
    assert still_open >= SOCKETS // 2, still_open
    times = sorted(t for t, _ in results)
    print(
        f"\n{SOCKETS} sockets, DRAIN_S={DRAIN_S}: closes from +0.0 s to "
        f"+{times[-1] - first[0]:.1f} s after the first"
    )
    assert await asyncio.to_thread(server.stop) == 0


class _FakeSockets:
    def __init__(self, n: int) -> None:
        self.open = n
        self.refusing = False
        self.batches: list[int] = []

    def open_count(self) -> int:
        return self.open

    def restart_some(self, n: int) -> int:
        closed = min(n, self.open)
        self.open -= closed
        self.batches.append(closed)
        return closed


async def test_drain_plan_closes_everything_in_small_batches() -> None:
    sockets = _FakeSockets(1000)
    closed = await Drain(1.0, sockets).close_spread()
    assert closed == 1000 and sockets.open == 0 and sockets.refusing
    assert len(sockets.batches) >= 5  # spread over ticks, not one batch
    assert max(sockets.batches) < 1000


async def test_a_small_instance_stops_quickly_at_the_minimum_rate() -> None:
    sockets = _FakeSockets(30)
    assert await Drain(600, sockets, min_rate=100).close_spread() == 30
    assert sum(sockets.batches[:4]) == 30  # 10 a tick: done in about 0.3 s, not 10 minutes


async def test_zero_window_closes_everything_at_once() -> None:
    sockets = _FakeSockets(50)
    assert await Drain(0, sockets).close_spread() == 50
    assert sockets.batches == [50]
