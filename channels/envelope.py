"""What travels on the broker: one header line, then the client frame exactly as sockets get it.

    D <seq> <acl_version> <published_at>\n<frame>   durable event
    E <exclude_user_id> <published_at>\n<frame>      ephemeral event (0 = nobody excluded)
    R <acl_version>\n                                  a revocation committed on the channel
    S\n<session id>\n<session id>...                   sessions ended (node control channel)

The frame is encoded once, by the publisher; instances never re-encode it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Durable:
    seq: int
    acl: int
    published_at: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ephemeral:
    exclude_user: int
    published_at: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class Revoked:
    acl: int


@dataclass(frozen=True, slots=True)
class SessionsEnded:
    session_ids: tuple[str, ...]


Envelope = Durable | Ephemeral | Revoked | SessionsEnded


def durable(seq: int, acl: int, published_at: float, payload: bytes) -> bytes:
    return b"D %d %d %.6f\n" % (seq, acl, published_at) + payload


def ephemeral(exclude_user: int, published_at: float, payload: bytes) -> bytes:
    return b"E %d %.6f\n" % (exclude_user, published_at) + payload


def revoked(acl: int) -> bytes:
    return b"R %d\n" % acl


def sessions_ended(session_ids: Sequence[str]) -> bytes:
    for sid in session_ids:
        if not sid or "\n" in sid:
            raise ValueError(f"invalid session id {sid!r}")
    return b"S\n" + "\n".join(session_ids).encode()


def decode(message: bytes) -> Envelope:
    """Raises ValueError on anything malformed."""
    header, _, payload = message.partition(b"\n")
    parts = header.split(b" ")
    kind = parts[0]
    if kind == b"D" and len(parts) == 4:
        return Durable(int(parts[1]), int(parts[2]), float(parts[3]), payload)
    if kind == b"E" and len(parts) == 3:
        return Ephemeral(int(parts[1]), float(parts[2]), payload)
    if kind == b"R" and len(parts) == 2:
        return Revoked(int(parts[1]))
    if kind == b"S" and len(parts) == 1:
        return SessionsEnded(tuple(p for p in payload.decode().split("\n") if p))
    raise ValueError("malformed envelope")
