"""Shared types of the realtime layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JSONObject = Mapping[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as every time on the wire."""
    return at.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on a socket, until when their credential is valid, and the session the
    credential belongs to (opaque to this layer; `Realtime.end_sessions` closes every socket
    that was opened or re-authenticated with a credential of an ended session)."""

    user_id: int
    expires_at: datetime
    session_id: str | None = None


class AuthError(Exception):
    """A credential was missing, invalid, expired or reused. The message is safe to show."""


class Unavailable(Exception):
    """A credential could not be checked because a dependency is down (handshake -> 503).
    The message is safe to show."""


Authenticate = Callable[[str], Awaitable[Identity]]
"""Turns an access token into an identity, or raises AuthError."""

ConsumeTicket = Callable[[str], Awaitable[Identity]]
"""Consumes a single-use ticket (on any instance), or raises AuthError."""


@dataclass(frozen=True, slots=True)
class Event:
    """An event as the socket and the REST replay show it. Durable events have a `seq`."""

    channel: str
    event: str
    data: JSONObject
    at: datetime
    seq: int | None = None

    def to_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "event", "channel": self.channel}
        if self.seq is not None:
            frame["seq"] = self.seq
        frame["event"] = self.event
        frame["data"] = self.data
        frame["at"] = iso(self.at)
        return frame
