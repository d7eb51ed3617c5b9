"""What `kuda loadtest` prints: a progress line while it runs, a summary table and JSON."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kuda.loadtest.accounting import Histogram
from kuda.loadtest.procstat import Group, Named, machine_jiffies


@dataclass
class Row:
    label: str
    value: Any
    fmt: str = "{}"

    def text(self) -> str:
        v = self.value
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return self.fmt.format(v)


@dataclass
class Summary:
    scenario: str
    options: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, label: str, value: Any, fmt: str = "{}") -> None:
        self.rows.append(Row(label, value, fmt))
        self.data[key] = value

    def latency(self, key: str, label: str, h: Histogram) -> None:
        s = h.summary()
        self.data[key] = s
        if not s["count"]:
            self.rows.append(Row(f"{label} p50 / p90 / p99 / max (ms)", None))
            return
        ms = [1000 * float(s[k]) for k in ("p50", "p90", "p99", "max")]
        text = " / ".join(f"{v:.1f}" for v in ms) + f"  ({s['count']:,} samples)"
        self.rows.append(Row(f"{label} p50 / p90 / p99 / max (ms)", text))

    def table(self) -> str:
        width = max(len(r.label) for r in self.rows) if self.rows else 10
        out = [f"kuda loadtest {self.scenario}: {machine()}", ""]
        out.append(f"| {'metric'.ljust(width)} | value |")
        out.append(f"|{'-' * (width + 2)}|-------|")
        out += [f"| {r.label.ljust(width)} | {r.text()} |" for r in self.rows]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "machine": machine(),
            "options": self.options,
            "results": self.data,
            "notes": self.notes,
        }


def machine() -> str:
    mem = 0
    with contextlib.suppress(OSError, StopIteration), open("/proc/meminfo") as f:
        mem = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    return (
        f"{os.cpu_count()} CPUs, {mem / 1024 / 1024:.1f} GiB, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )


class Cpu:
    """CPU use of a process group between two points, as % of one core."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.t0 = time.monotonic()
        self.c0 = group.sample().cpu_s

    def seconds(self) -> float:
        return self.group.sample().cpu_s - self.c0

    def percent(self) -> float:
        wall = max(1e-6, time.monotonic() - self.t0)
        return 100 * self.seconds() / wall


class Host:
    """Between two points: the stores' CPU (every postgres and redis-server process on this
    host) and how busy the whole machine was, to show what else the servers competed with."""

    def __init__(self) -> None:
        self.postgres = Cpu(Named("postgres", ["postgres"]))
        self.redis = Cpu(Named("redis", ["redis-server"]))
        self.busy0, self.total0 = machine_jiffies()

    def machine_percent(self) -> float:
        """% of all cores."""
        busy, total = machine_jiffies()
        return 100 * (busy - self.busy0) / max(1, total - self.total0)


class Progress:
    """One status line, redrawn every second on a terminal (every 5 s otherwise)."""

    def __init__(self, scenario: str, servers: Group, tool: Group, enabled: bool = True) -> None:
        self.scenario = scenario
        self.servers = servers
        self.tool = tool
        self.enabled = enabled
        self.phase = "starting"
        self.detail: Callable[[], str] = lambda: ""
        self.tty = sys.stderr.isatty()
        self._task: asyncio.Task[None] | None = None
        self._start = time.monotonic()
        self._last: tuple[float, float, float] | None = None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run())

    def set(self, phase: str, detail: Callable[[], str] | None = None) -> None:
        self.phase = phase
        if detail is not None:
            self.detail = detail
        if self.enabled and not self.tty:
            print(f"[{self.scenario}] {self.phase}", file=sys.stderr)

    async def _run(self) -> None:
        every = 1.0 if self.tty else 5.0
        while True:
            await asyncio.sleep(every)
            self.draw()

    def draw(self) -> None:
        now = time.monotonic()
        server, tool = self.servers.sample(), self.tool.sample()
        cpu = ""
        if self._last is not None:
            t, s, c = self._last
            wall = max(1e-6, now - t)
            cpu = (
                f" | servers CPU {100 * (server.cpu_s - s) / wall:.0f}%"
                f" RSS {server.rss_kib / 1024:.0f} MiB"
                f" | tool CPU {100 * (tool.cpu_s - c) / wall:.0f}%"
            )
        self._last = (now, server.cpu_s, tool.cpu_s)
        line = f"[{self.scenario} {now - self._start:6.1f}s] {self.phase} {self.detail()}{cpu}"
        if self.tty:
            print("\r\x1b[2K" + line[:250], end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.enabled and self.tty:
            print(file=sys.stderr)
