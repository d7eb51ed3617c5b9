"""The socket protocol core, sans I/O: parse client frames into ops, encode server frames.

Nothing here touches a socket or the event loop; it is tested with text in and objects out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from channels.codes import ErrorCode
from channels.types import iso

MAX_CHANNEL_LENGTH = 200
MAX_ID_LENGTH = 64
MAX_TOKEN_LENGTH = 8192
MAX_MESSAGE_ID_LENGTH = 64

ClientId = str | int | None


class FrameError(Exception):
    """A client frame that cannot be served; becomes an `error` frame, the socket stays open."""

    def __init__(self, code: ErrorCode, message: str, client_id: ClientId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: ClientId
    channel: str
    since: int | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: ClientId
    channel: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: ClientId


@dataclass(frozen=True, slots=True)
class Auth:
    id: ClientId
    token: str


@dataclass(frozen=True, slots=True)
class Send:
    id: ClientId
    channel: str
    body: str
    client_id: str | None = None  # the sender's id for the message: a retry is stored once


@dataclass(frozen=True, slots=True)
class Typing:
    id: ClientId
    channel: str


@dataclass(frozen=True, slots=True)
class Presence:
    id: ClientId
    channel: str


Op = Subscribe | Unsubscribe | Ping | Auth | Send | Typing | Presence


def parse(text: str) -> Op:
    """Parse one client text frame. Raises FrameError with the contract's code."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorCode.BAD_REQUEST, "Malformed JSON") from None
    if not isinstance(frame, dict):
        raise FrameError(ErrorCode.BAD_REQUEST, "A frame must be a JSON object")
    client_id = _client_id(frame)
    op = frame.get("op")
    parser = _PARSERS.get(op) if isinstance(op, str) else None
    if parser is None:
        raise FrameError(ErrorCode.BAD_REQUEST, f"Unknown op {op!r}", client_id)
    return parser(frame, client_id)


def _client_id(frame: dict[str, Any]) -> ClientId:
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FrameError(ErrorCode.VALIDATION_ERROR, "`id` must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise FrameError(ErrorCode.VALIDATION_ERROR, f"`id` is longer than {MAX_ID_LENGTH}")
    return value


def _string(frame: dict[str, Any], name: str, client_id: ClientId, max_length: int) -> str:
    value = frame.get(name)
    if value is None:
        raise FrameError(ErrorCode.VALIDATION_ERROR, f"`{name}` is required", client_id)
    if not isinstance(value, str):
        raise FrameError(ErrorCode.VALIDATION_ERROR, f"`{name}` must be a string", client_id)
    if not value or len(value) > max_length:
        message = f"`{name}` must be 1..{max_length} characters"
        raise FrameError(ErrorCode.VALIDATION_ERROR, message, client_id)
    return value


def _channel(frame: dict[str, Any], client_id: ClientId) -> str:
    return _string(frame, "channel", client_id, MAX_CHANNEL_LENGTH)


def _since(frame: dict[str, Any], client_id: ClientId) -> int | None:
    since = frame.get("since")
    if since is None:
        return None
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        message = "`since` must be a non-negative integer"
        raise FrameError(ErrorCode.VALIDATION_ERROR, message, client_id)
    return since


def _subscribe(frame: dict[str, Any], cid: ClientId) -> Op:
    return Subscribe(cid, _channel(frame, cid), _since(frame, cid))


def _unsubscribe(frame: dict[str, Any], cid: ClientId) -> Op:
    return Unsubscribe(cid, _channel(frame, cid))


def _ping(frame: dict[str, Any], cid: ClientId) -> Op:
    return Ping(cid)


def _auth(frame: dict[str, Any], cid: ClientId) -> Op:
    return Auth(cid, _string(frame, "token", cid, MAX_TOKEN_LENGTH))


def _send(frame: dict[str, Any], cid: ClientId) -> Op:
    body = frame.get("body")
    if not isinstance(body, str):
        name = "required" if body is None else "must be a string"
        raise FrameError(ErrorCode.VALIDATION_ERROR, f"`body` {name}", cid)
    client_id = None
    if frame.get("client_id") is not None:
        client_id = _string(frame, "client_id", cid, MAX_MESSAGE_ID_LENGTH)
    return Send(cid, _channel(frame, cid), body, client_id)


def _typing(frame: dict[str, Any], cid: ClientId) -> Op:
    return Typing(cid, _channel(frame, cid))


def _presence(frame: dict[str, Any], cid: ClientId) -> Op:
    return Presence(cid, _channel(frame, cid))


_PARSERS = {
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "ping": _ping,
    "auth": _auth,
    "send": _send,
    "typing": _typing,
    "presence": _presence,
}


# Server frames -------------------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def with_id(frame: dict[str, Any], client_id: ClientId) -> dict[str, Any]:
    if client_id is not None:
        frame["id"] = client_id
    return frame


def welcome(
    connection_id: str, user_id: int, heartbeat_s: int, expires_at: datetime
) -> dict[str, Any]:
    return {
        "type": "welcome",
        "connection_id": connection_id,
        "user_id": user_id,
        "protocol": 1,
        "heartbeat_s": heartbeat_s,
        "expires_at": iso(expires_at),
    }


def error(code: ErrorCode, message: str, client_id: ClientId = None) -> dict[str, Any]:
    return with_id({"type": "error", "code": code.value, "message": message}, client_id)


def subscribed(
    channel: str, seq: int | None, recovered: bool, client_id: ClientId
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribed", "channel": channel}
    if seq is not None:
        frame["seq"] = seq
    frame["recovered"] = recovered
    return with_id(frame, client_id)


def presence(channel: str, users: list[int], client_id: ClientId) -> dict[str, Any]:
    return with_id({"type": "presence", "channel": channel, "users": users}, client_id)


def unsubscribed(
    channel: str, reason: str | None = None, client_id: ClientId = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "unsubscribed", "channel": channel}
    if reason is not None:
        frame["reason"] = reason
    return with_id(frame, client_id)


# WebSocket framing for the fan-out fast path --------------------------------------------------


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented server->client text frame (RFC 6455 section 5.2).

    Server frames are never masked, so the same bytes can be written to every socket:
    an event's frame is built once per instance, whatever the number of subscribers.
    """
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload
