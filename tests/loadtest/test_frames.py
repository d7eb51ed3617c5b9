"""The load tool slices event frames instead of decoding them: check it against real frames."""

from __future__ import annotations

from datetime import UTC, datetime

from channels.protocol import encode
from channels.types import Event
from kuda.loadtest import frames


def test_durable_event_frame() -> None:
    at = datetime(2026, 11, 30, 3, 4, 5, 678000, tzinfo=UTC)
    data = {"notes": 'a "quoted" at:"x" lt#41#', "seq": 99}
    payload = encode(Event("ride:42", "ride.updated", data, at, seq=18).to_frame())
    info = frames.parse_event(payload)
    assert frames.is_event(payload)
    assert info == frames.EventInfo("ride:42", 18, 41, at.timestamp())


def test_live_event_frame_has_no_seq() -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    payload = encode(Event("rides", "ride.created", {"notes": frames.marked(7)}, at).to_frame())
    info = frames.parse_event(payload)
    assert (info.channel, info.seq, info.mark) == ("rides", None, 7)


def test_control_frames_are_not_events() -> None:
    assert not frames.is_event(b'{"type":"subscribed","channel":"rides"}')
