"""The per-instance replay cache is bounded in bytes and reports itself (issue 8: one user pinned
~180 MiB with 64 subscribes of 8 KB events; nothing bounded it but a count of ranges)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from channels import append
from channels.hub import OutFrame
from channels.metrics import Metrics
from channels.replay_cache import ReplayCache, frames_size
from tests.helpers import signup
from tests.live import LiveServer, ws_connect


def _frames(n: int, size: int) -> list[OutFrame]:
    return [OutFrame(b"x" * size) for _ in range(n)]


def test_ranges_are_evicted_least_recently_used_to_stay_within_bytes() -> None:
    metrics = Metrics()
    cache = ReplayCache(100_000, metrics)
    for since in range(20):
        cache.put(("user:1", since, 50), _frames(5, 1000))
        assert cache.bytes <= cache.max_bytes
    assert cache.get(("user:1", 19, 50)) is not None
    assert cache.get(("user:1", 1, 50)) is None  # evicted long ago
    sample = metrics.registry.get_sample_value
    assert sample("kuda_replay_cache_bytes") == cache.bytes
    assert sample("kuda_replay_cache_ranges") == len(cache)
    assert (sample("kuda_replay_cache_evictions_total") or 0) > 0


def test_a_range_over_a_quarter_of_the_bound_is_served_but_not_kept() -> None:
    cache = ReplayCache(100_000, Metrics())
    big = _frames(20, 1000)
    assert frames_size(big) > 25_000
    cache.put(("ride:1", 0, 20), big)
    assert cache.get(("ride:1", 0, 20)) is None and cache.bytes == 0


async def test_many_subscribes_of_large_events_stay_within_the_bound(
    live_factory: Callable[..., Any],
) -> None:
    bound = 2 * 1024 * 1024
    live: LiveServer = await live_factory(
        replay_cache_bytes=bound, ws_ops_per_s=1000, ws_ops_burst=1000
    )
    async with httpx.AsyncClient(base_url=live.http) as http:
        user = await signup(http)
    channel = f"user:{user.id}"
    async with live.sessionmaker() as session:
        for i in range(40):
            await append(session, channel, "note", {"i": i, "blob": "é" * 4000})  # ~8 KB
        await session.commit()
    async with ws_connect(live.ws_url, user.access_token) as ws:
        await ws.expect("welcome")
        for since in range(0, 40, 1):  # 40 different ranges, ~0.3 MiB each on average
            await ws.send({"op": "subscribe", "channel": channel, "since": since})
            await ws.events(40 - since, timeout=30)
            await ws.expect("subscribed", 30)
            await ws.request({"op": "unsubscribe", "channel": channel})
    metrics = live.app.state.realtime.metrics
    cached = metrics.registry.get_sample_value("kuda_replay_cache_bytes")
    assert cached is not None and 0 < cached <= bound
    assert (metrics.registry.get_sample_value("kuda_replay_cache_evictions_total") or 0) > 0
