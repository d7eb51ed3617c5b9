"""Prometheus metrics of the realtime layer, on a registry owned by one app instance.

Hot-path counts (frames delivered) are plain integers read at scrape time, so fan-out pays an
integer add per event, not a locked counter increment per socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Tallies:
    """Plain counters bumped on the hot path."""

    __slots__ = ("delivered", "frames_in", "frames_out", "overflows", "sockets", "subscriptions")

    def __init__(self) -> None:
        self.sockets = 0
        self.subscriptions = 0
        self.frames_in = 0
        self.frames_out = 0
        self.delivered = 0
        self.overflows = 0


class _TallyCollector(Collector):
    def __init__(self, tallies: Tallies, broker_healthy: Callable[[], bool]) -> None:
        self._t = tallies
        self._broker_healthy = broker_healthy

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        t = self._t
        yield GaugeMetricFamily("kuda_ws_open_sockets", "Open WebSocket connections", t.sockets)
        yield GaugeMetricFamily(
            "kuda_ws_subscriptions", "Channel subscriptions held by sockets", t.subscriptions
        )
        yield CounterMetricFamily("kuda_ws_frames_in", "Client frames received", t.frames_in)
        yield CounterMetricFamily("kuda_ws_frames_out", "Server frames written", t.frames_out)
        yield CounterMetricFamily(
            "kuda_events_delivered", "Event frames written to sockets (live)", t.delivered
        )
        yield CounterMetricFamily(
            "kuda_ws_queue_overflows", "Sockets closed 4429 for not keeping up", t.overflows
        )
        yield GaugeMetricFamily(
            "kuda_broker_up", "1 when the broker is connected", int(self._broker_healthy())
        )


class Metrics:
    def __init__(self, broker_healthy: Callable[[], bool] = lambda: True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tallies = Tallies()
        self.registry.register(_TallyCollector(self.tallies, broker_healthy))
        r = self.registry
        self.appended = Counter("kuda_events_appended", "Durable events committed", registry=r)
        self.published = Counter("kuda_events_published", "Events handed to the broker", registry=r)
        self.relayed = Counter(
            "kuda_events_relayed", "Committed events published late by the relay", registry=r
        )
        self.publish_failures = Counter(
            "kuda_publish_failures", "Publish batches refused by the broker", registry=r
        )
        self.replayed = Counter(
            "kuda_events_replayed", "Events replayed from PostgreSQL to sockets", registry=r
        )
        self.replay_cache_bytes = Gauge(
            "kuda_replay_cache_bytes", "Bytes of encoded replay ranges cached", registry=r
        )
        self.replay_cache_ranges = Gauge(
            "kuda_replay_cache_ranges", "Replay ranges cached", registry=r
        )
        self.replay_cache_hits = Counter(
            "kuda_replay_cache_hits", "Subscribes served a cached replay range", registry=r
        )
        self.replay_cache_misses = Counter(
            "kuda_replay_cache_misses", "Replay ranges read from PostgreSQL", registry=r
        )
        self.replay_cache_evictions = Counter(
            "kuda_replay_cache_evictions", "Replay ranges evicted to stay in bytes", registry=r
        )
        self.gap_fills = Counter(
            "kuda_gap_fills", "Event gaps filled from PostgreSQL by the hub", registry=r
        )
        self.latency = Histogram(
            "kuda_publish_to_delivery_seconds",
            "From publish to written on this instance's sockets",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
