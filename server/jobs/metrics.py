"""Prometheus metrics per job, on the app's registry (beside the realtime and HTTP ones)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.runs = Counter("kuda_job_runs", "Job batches run", ["job"], registry=r)
        self.items = Counter(
            "kuda_job_items",
            "Work a job did: reminders sent, rides completed, rows deleted",
            ["job"],
            registry=r,
        )
        self.failures = Counter(
            "kuda_job_failures", "Job batches that failed (rolled back)", ["job"], registry=r
        )
        self.duration = Histogram(
            "kuda_job_duration_seconds",
            "Time of one job batch",
            ["job"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
