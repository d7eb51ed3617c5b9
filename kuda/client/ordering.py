"""Per-subscription ordering, sans I/O: each seq once and in order, early ones held, gaps
reported so the caller can fill them from the REST replay."""

from __future__ import annotations

from kuda.client.types import Frame


class Sequencer:
    """Tracks `last`, the seq of the last durable event handed to the consumer.

    `offer` returns the events that are now deliverable, in seq order: a seq <= last is a
    duplicate (dropped), last + 1 is delivered with whatever was held after it, a later one is
    held until the gap before it is filled. `wants_fill` says a gap exists (held events beyond
    it, a target seq not reached yet, or events dropped because the holding area was full)."""

    def __init__(self, since: int | None, max_held: int = 10_000) -> None:
        self.last = since
        self.target = since or 0
        self.overflowed = False
        self._held: dict[int, Frame] = {}
        self._max_held = max_held

    @property
    def started(self) -> bool:
        return self.last is not None

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def wants_fill(self) -> bool:
        if self.last is None:
            return False
        if self.overflowed or self.last < self.target:
            return True
        return bool(self._held) and min(self._held) > self.last + 1

    def start(self, seq: int) -> list[Frame]:
        """Start a subscription that had no position at `seq` (the ack's)."""
        if self.last is None:
            self.last = seq
        return self._drain()

    def expect(self, seq: int) -> None:
        """Events up to `seq` exist (an ack's head): deliver them, filling if needed."""
        self.target = max(self.target, seq)

    def offer(self, frame: Frame) -> list[Frame]:
        seq = int(frame["seq"])
        self.target = max(self.target, seq)
        if self.last is None or seq <= self.last:
            return []
        if seq == self.last + 1:
            self.last = seq
            return [frame, *self._drain()]
        if len(self._held) >= self._max_held:
            self._held.clear()  # the REST replay has them all: fetch them later instead
            self.overflowed = True
        else:
            self._held[seq] = frame
        return []

    def reset(self, seq: int) -> list[Frame]:
        """Continue after `seq` (history before it is unavailable): drop what is older."""
        self.last = seq
        self.target = max(self.target, seq)
        self.overflowed = False
        for s in [s for s in self._held if s <= seq]:
            del self._held[s]
        return self._drain()

    def _drain(self) -> list[Frame]:
        out: list[Frame] = []
        assert self.last is not None
        while (frame := self._held.pop(self.last + 1, None)) is not None:
            out.append(frame)
            self.last += 1
        for s in [s for s in self._held if s <= self.last]:
            del self._held[s]
        return out
