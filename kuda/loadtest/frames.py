"""Cheap parsing of the server's frames: the hot scenarios read tens of thousands of event
frames per second per process, so events are sliced, not JSON-decoded.

An event frame is `{"type":"event","channel":"<c>"[,"seq":<n>],"event":...,"data":...,"at":"<t>"}`
(keys in that order: channels/types.py `Event.to_frame`). Everything else is small and rare and
is decoded with orjson.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

EVENT_PREFIX = b'{"type":"event","channel":"'
SEQ_KEY = b',"seq":'
AT_KEY = b',"at":"'
MARK = b"lt#"  # the tool numbers events on live-only channels: `lt#<n>#` in the ride's notes


class EventInfo(NamedTuple):
    channel: str
    seq: int | None  # durable channels
    mark: int | None  # the tool's own number, when the event carries one
    at: float  # the event's timestamp (server clock), seconds since the epoch


def is_event(payload: bytes) -> bool:
    return payload.startswith(EVENT_PREFIX)


def parse_event(payload: bytes) -> EventInfo:
    start = len(EVENT_PREFIX)
    end = payload.index(b'"', start)
    channel = payload[start:end].decode()
    seq: int | None = None
    if payload.startswith(SEQ_KEY, end + 1):
        s = end + 1 + len(SEQ_KEY)
        seq = int(payload[s : payload.index(b",", s)])
    a = payload.rindex(AT_KEY) + len(AT_KEY)
    at = datetime.fromisoformat(payload[a : payload.index(b'"', a)].decode()).timestamp()
    mark: int | None = None
    m = payload.find(MARK)
    if m >= 0:
        m += len(MARK)
        mark = int(payload[m : payload.index(b"#", m)])
    return EventInfo(channel, seq, mark, at)


def marked(n: int) -> str:
    return f"{MARK.decode()}{n}#"
