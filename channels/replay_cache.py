"""Encoded replay ranges shared by the clients that resume the same range, bounded in bytes.

Committed events never change, so the frames of `(channel, since, head)` are read and encoded
once and reused by every client resuming that range (docs/decisions.md D17). The cache holds at
most `max_bytes` of frames in all (least recently used ranges are evicted first), and a range
larger than a quarter of that is served but never kept, so no client, however many subscribes
it makes and however large its events, can pin more than the bound on an instance.
"""

from __future__ import annotations

from collections import OrderedDict

from channels.hub import OutFrame
from channels.metrics import Metrics

Key = tuple[str, int, int]
FRAME_OVERHEAD = 120  # the OutFrame object and its two bytes objects, beyond their contents


def frames_size(frames: list[OutFrame]) -> int:
    """Bytes a list of frames holds (payload and WebSocket frame of each, plus objects)."""
    return sum(len(f.payload) + len(f.ws) + FRAME_OVERHEAD for f in frames)


class ReplayCache:
    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._ranges: OrderedDict[Key, tuple[list[OutFrame], int]] = OrderedDict()
        self._metrics = metrics
        metrics.replay_cache_bytes.set_function(lambda: self.bytes)
        metrics.replay_cache_ranges.set_function(lambda: len(self._ranges))

    def __len__(self) -> int:
        return len(self._ranges)

    def get(self, key: Key) -> list[OutFrame] | None:
        entry = self._ranges.get(key)
        if entry is None:
            self._metrics.replay_cache_misses.inc()
            return None
        self._ranges.move_to_end(key)
        self._metrics.replay_cache_hits.inc()
        return entry[0]

    def put(self, key: Key, frames: list[OutFrame]) -> None:
        size = frames_size(frames)
        if size > self.max_bytes // 4 or key in self._ranges:
            return
        self._ranges[key] = (frames, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._ranges.popitem(last=False)
            self.bytes -= evicted
            self._metrics.replay_cache_evictions.inc()
