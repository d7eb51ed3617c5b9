"""HTTP metrics beside the realtime ones: requests and latency per route template, requests in
flight, the database pools and the cache's hits and misses.

The request path pays a few dict operations and a bisect (`HttpTallies.observe`, called by the
request-id middleware that already times each request); Prometheus families are built only when
`/metrics` is scraped, like `channels.metrics`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # no route: one label for every unknown path (bounded cardinality)


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0


class HttpTallies:
    """Plain counters bumped once per request."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._latency: dict[tuple[str, str], _Series] = {}
        self._status: dict[tuple[str, str, int], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        series = self._latency.get(key)
        if series is None:
            series = self._latency[key] = _Series()
        series.buckets[bisect_left(BUCKETS, seconds)] += 1
        series.count += 1
        series.sum += seconds
        skey = (method, route, status)
        self._status[skey] = self._status.get(skey, 0) + 1

    def snapshot(self) -> tuple[list[tuple[tuple[str, str], _Series]], dict[Any, int]]:
        return list(self._latency.items()), dict(self._status)


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The matched route's template (`/api/v1/rides/{ride_id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpCollector(Collector):
    def __init__(
        self,
        tallies: HttpTallies,
        engines: dict[str, AsyncEngine],
        cache_counts: Callable[[], tuple[int, int]] | None,
    ) -> None:
        self._t = tallies
        self._engines = engines
        self._cache_counts = cache_counts

    def collect(self) -> Iterable[Any]:
        latency, statuses = self._t.snapshot()
        requests = CounterMetricFamily(
            "kuda_http_requests", "HTTP requests answered", labels=["method", "route", "status"]
        )
        for (method, route, status), n in statuses.items():
            requests.add_metric([method, route, str(status)], n)
        yield requests
        histogram = HistogramMetricFamily(
            "kuda_http_request_duration_seconds",
            "HTTP request latency, from the request to the end of the response",
            labels=["method", "route"],
        )
        for (method, route), series in latency:
            cumulative, buckets = 0, []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), series.buckets, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            histogram.add_metric([method, route], buckets, series.sum)
        yield histogram
        yield GaugeMetricFamily(
            "kuda_http_requests_in_flight", "HTTP requests being served", self._t.in_flight
        )
        yield from self._pools()
        if self._cache_counts is not None:
            hits, misses = self._cache_counts()
            yield CounterMetricFamily("kuda_cache_hits", "Ride/profile cache hits", hits)
            yield CounterMetricFamily("kuda_cache_misses", "Ride/profile cache misses", misses)

    def _pools(self) -> Iterable[GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "kuda_db_pool_size", "Connections the pool keeps open", labels=["pool"]
        )
        out = GaugeMetricFamily(
            "kuda_db_pool_checked_out", "Connections in use by requests and tasks", labels=["pool"]
        )
        overflow = GaugeMetricFamily(
            "kuda_db_pool_overflow", "Connections open beyond the pool size", labels=["pool"]
        )
        for name, engine in self._engines.items():
            pool: Any = engine.pool
            if not hasattr(pool, "checkedout"):
                continue  # a pool without accounting (NullPool)
            size.add_metric([name], pool.size())
            out.add_metric([name], pool.checkedout())
            overflow.add_metric([name], max(0, pool.overflow()))
        yield from (size, out, overflow)
