"""Delivery accounting: what a stream of numbered events lost, repeated or reordered.

Pure code (no I/O), shared by every scenario and tested on its own. A stream is one socket's
view of one channel: durable channels number events with `seq`; the tool numbers the events it
publishes on live-only channels itself. Latencies go into a mergeable log-bucketed histogram so
client processes can report millions of samples in a few hundred numbers.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class Tally:
    """Totals over many streams."""

    received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0

    def add(self, other: Tally) -> None:
        self.received += other.received
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
        }


class SeqStream:
    """Numbers expected as `start + 1, start + 2, ...`, once each, in order.

    - the next number: in order;
    - a number past the next: the skipped ones become holes (lost unless they arrive later);
    - a number that fills a hole: counted out of order (it was late, not lost);
    - a number already had (or at or below `start`): a duplicate.
    `lost(expected_last)` counts the holes plus what never came up to `expected_last`.
    """

    __slots__ = ("_holes", "duplicated", "last", "out_of_order", "received", "start")

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self.last = start
        self.received = 0
        self.duplicated = 0
        self.out_of_order = 0
        self._holes: list[tuple[int, int]] = []  # sorted, disjoint, inclusive ranges

    def observe(self, n: int) -> None:
        self.received += 1
        last = self.last
        if n == last + 1:
            self.last = n
        elif n > last:
            self._holes.append((last + 1, n - 1))
            self.last = n
        elif not self._fill(n):
            self.duplicated += 1

    def _fill(self, n: int) -> bool:
        holes = self._holes
        i = bisect.bisect_right(holes, (n, math.inf)) - 1
        if i < 0:
            return False
        lo, hi = holes[i]
        if not lo <= n <= hi:
            return False
        replacement = [r for r in ((lo, n - 1), (n + 1, hi)) if r[0] <= r[1]]
        holes[i : i + 1] = replacement
        self.out_of_order += 1
        return True

    @property
    def holes(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self._holes)

    def lost(self, expected_last: int | None = None) -> int:
        """Missing numbers up to `expected_last` (default: the highest seen)."""
        tail = 0 if expected_last is None else max(0, expected_last - self.last)
        return self.holes + tail

    def complete(self, expected_last: int) -> bool:
        return self.last >= expected_last and not self._holes

    def tally(self, expected_last: int | None = None) -> Tally:
        return Tally(self.received, self.lost(expected_last), self.duplicated, self.out_of_order)


def total(streams: Iterable[SeqStream], expected_last: int | None = None) -> Tally:
    out = Tally()
    for stream in streams:
        out.add(stream.tally(expected_last))
    return out


class Histogram:
    """Log-bucketed latencies in seconds: about 1.1 % relative precision from 1 µs to hours.

    Mergeable (`merge`, `to_dict`/`from_dict`) so that each client process keeps its own and
    the coordinator adds them. Values below 1 µs (including negative ones from clock noise)
    count in the lowest bucket; `negative` counts the latter so they are not hidden."""

    SCALE = 64  # buckets per doubling: 2 ** (1/64) - 1 = 1.09 %
    FLOOR = 1e-6

    __slots__ = ("buckets", "count", "max", "min", "negative")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.negative = 0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        self.count += 1
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < 0:
            self.negative += 1
        b = 0 if seconds <= self.FLOOR else int(math.log2(seconds / self.FLOOR) * self.SCALE)
        self.buckets[b] = self.buckets.get(b, 0) + 1

    def _value(self, bucket: int) -> float:
        """The upper bound of a bucket (a percentile never understates)."""
        return float(self.FLOOR * 2 ** ((bucket + 1) / self.SCALE))

    def percentile(self, q: float) -> float:
        """The value at or below which `q` (0..1) of the samples fall; nan when empty."""
        if not self.count:
            return math.nan
        if q >= 1:
            return self.max
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(self._value(bucket), self.max)
        return self.max

    def merge(self, other: Histogram) -> None:
        for bucket, n in other.buckets.items():
            self.buckets[bucket] = self.buckets.get(bucket, 0) + n
        self.count += other.count
        self.negative += other.negative
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def summary(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50": self.percentile(0.50),
            "p90": self.percentile(0.90),
            "p99": self.percentile(0.99),
            "max": self.max if self.count else math.nan,
            "negative": self.negative,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "negative": self.negative,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Histogram:
        h = cls()
        buckets = data.get("buckets") or {}
        assert isinstance(buckets, Mapping)
        h.buckets = {int(k): int(v) for k, v in buckets.items()}
        h.count = int(data.get("count") or 0)  # type: ignore[call-overload]
        h.negative = int(data.get("negative") or 0)  # type: ignore[call-overload]
        low, high = data.get("min"), data.get("max")
        h.min = float(low) if isinstance(low, int | float) else math.inf
        h.max = float(high) if isinstance(high, int | float) else -math.inf
        return h
