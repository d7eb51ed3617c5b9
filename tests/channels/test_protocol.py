"""The socket protocol core without I/O: client frames in, ops or refusals out; server frames,
WebSocket framing and broker envelopes encoded and decoded back (PROTOCOL.md section 3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from channels import envelope, protocol
from channels.codes import ErrorCode
from channels.protocol import (
    Auth,
    ClientId,
    FrameError,
    Op,
    Ping,
    Send,
    Subscribe,
    Typing,
    Unsubscribe,
)


def dumps(frame: Any) -> str:
    return json.dumps(frame)  # not orjson: it cannot write integers past 64 bits


def refusal(text: str) -> FrameError:
    with pytest.raises(FrameError) as info:
        protocol.parse(text)
    return info.value


def as_json(frame: dict[str, Any]) -> Any:
    """What a client reads off the socket."""
    return orjson.loads(protocol.encode(frame))


# Parsing: every op -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "op"),
    [
        ({"op": "subscribe", "channel": "ride:1"}, Subscribe(None, "ride:1", None)),
        ({"op": "subscribe", "channel": "ride:1", "since": None}, Subscribe(None, "ride:1", None)),
        ({"op": "subscribe", "channel": "ride:1", "since": 0}, Subscribe(None, "ride:1", 0)),
        (
            {"op": "subscribe", "channel": "user:7", "since": 18, "id": "s1"},
            Subscribe("s1", "user:7", 18),
        ),
        ({"op": "unsubscribe", "channel": "ride:1", "id": 2}, Unsubscribe(2, "ride:1")),
        ({"op": "ping"}, Ping(None)),
        ({"op": "ping", "id": 0}, Ping(0)),
        ({"op": "ping", "id": -5}, Ping(-5)),
        ({"op": "ping", "id": "x" * protocol.MAX_ID_LENGTH}, Ping("x" * protocol.MAX_ID_LENGTH)),
        ({"op": "auth", "token": "eyJ.a.b", "id": "a"}, Auth("a", "eyJ.a.b")),
        (
            {"op": "send", "channel": "ride:3:chat", "body": "on my way", "id": 9},
            Send(9, "ride:3:chat", "on my way"),
        ),
        (
            {"op": "send", "channel": "ride:3:chat", "body": "é ✓ \n"},
            Send(None, "ride:3:chat", "é ✓ \n"),
        ),
        ({"op": "typing", "channel": "ride:3:chat"}, Typing(None, "ride:3:chat")),
        (
            {"op": "subscribe", "channel": "c" * protocol.MAX_CHANNEL_LENGTH},
            Subscribe(None, "c" * protocol.MAX_CHANNEL_LENGTH, None),
        ),
        (
            {"op": "auth", "token": "t" * protocol.MAX_TOKEN_LENGTH},
            Auth(None, "t" * protocol.MAX_TOKEN_LENGTH),
        ),
    ],
)
def test_parse_accepts_every_op(frame: dict[str, Any], op: Op) -> None:
    assert protocol.parse(dumps(frame)) == op


def test_parse_accepts_whitespace_around_the_object() -> None:
    assert protocol.parse('  \n{"op": "ping", "id": "p"}\n ') == Ping("p")


# Parsing: refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", " ", "{", '{"op": "ping"', "nope", "{'op': 'ping'}", '{"op": "ping",}', "{}{}"],
)
def test_malformed_json_is_a_bad_request(text: str) -> None:
    err = refusal(text)
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.client_id is None


@pytest.mark.parametrize("text", ["[]", '[{"op": "ping"}]', "42", "1.5", '"ping"', "null", "true"])
def test_a_frame_that_is_not_an_object_is_a_bad_request(text: str) -> None:
    err = refusal(text)
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.client_id is None


@pytest.mark.parametrize(
    ("frame", "client_id"),
    [
        ({"op": "publish", "id": 3}, 3),
        ({"op": "PING", "id": "c"}, "c"),
        ({"op": "", "id": "c"}, "c"),
        ({"op": 1, "id": "c"}, "c"),
        ({"op": ["ping"]}, None),
        ({"op": None, "id": 4}, 4),
        ({"id": "no-op"}, "no-op"),
        ({}, None),
    ],
)
def test_unknown_or_missing_op_is_a_bad_request_echoing_the_id(
    frame: dict[str, Any], client_id: ClientId
) -> None:
    err = refusal(dumps(frame))
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.client_id == client_id


@pytest.mark.parametrize(
    "frame",
    [
        # missing fields
        {"op": "subscribe"},
        {"op": "subscribe", "since": 1},
        {"op": "subscribe", "channel": None},
        {"op": "unsubscribe"},
        {"op": "auth"},
        {"op": "auth", "token": None},
        {"op": "send", "channel": "ride:1:chat"},
        {"op": "send", "body": "hi"},
        {"op": "send", "channel": "ride:1:chat", "body": None},
        {"op": "typing"},
        # channel: wrong type or size
        {"op": "subscribe", "channel": 42},
        {"op": "subscribe", "channel": ["ride:1"]},
        {"op": "subscribe", "channel": {"name": "ride:1"}},
        {"op": "subscribe", "channel": True},
        {"op": "subscribe", "channel": ""},
        {"op": "subscribe", "channel": "c" * (protocol.MAX_CHANNEL_LENGTH + 1)},
        {"op": "unsubscribe", "channel": 1},
        {"op": "send", "channel": 1, "body": "hi"},
        {"op": "typing", "channel": 1.5},
        # since: not a non-negative integer
        {"op": "subscribe", "channel": "ride:1", "since": -1},
        {"op": "subscribe", "channel": "ride:1", "since": True},
        {"op": "subscribe", "channel": "ride:1", "since": False},
        {"op": "subscribe", "channel": "ride:1", "since": "3"},
        {"op": "subscribe", "channel": "ride:1", "since": 1.5},
        {"op": "subscribe", "channel": "ride:1", "since": 2.0},
        {"op": "subscribe", "channel": "ride:1", "since": [1]},
        # token: not a string, or empty, or too long
        {"op": "auth", "token": 123},
        {"op": "auth", "token": ["a"]},
        {"op": "auth", "token": ""},
        {"op": "auth", "token": "t" * (protocol.MAX_TOKEN_LENGTH + 1)},
        # body: not a string
        {"op": "send", "channel": "ride:1:chat", "body": 1},
        {"op": "send", "channel": "ride:1:chat", "body": ["hi"]},
        {"op": "send", "channel": "ride:1:chat", "body": {"text": "hi"}},
        {"op": "send", "channel": "ride:1:chat", "body": False},
    ],
)
@pytest.mark.parametrize("client_id", [None, 17, "req-1"])
def test_missing_or_mistyped_fields_are_validation_errors_echoing_the_id(
    frame: dict[str, Any], client_id: ClientId
) -> None:
    if client_id is not None:
        frame = {**frame, "id": client_id}
    err = refusal(dumps(frame))
    assert err.code is ErrorCode.VALIDATION_ERROR
    assert err.client_id == client_id
    assert err.message


@pytest.mark.parametrize(
    "client_id",
    [1.5, 2.0, True, False, [1], {"n": 1}, "x" * (protocol.MAX_ID_LENGTH + 1), 2**64],
)
@pytest.mark.parametrize(
    "frame",
    [
        {"op": "ping"},
        {"op": "subscribe", "channel": "ride:1"},
        {"op": "nope"},
        {"op": "subscribe"},
    ],
)
def test_an_invalid_id_is_a_validation_error_and_is_not_echoed(
    frame: dict[str, Any], client_id: Any
) -> None:
    err = refusal(dumps({**frame, "id": client_id}))
    assert err.code is ErrorCode.VALIDATION_ERROR
    assert err.client_id is None


def test_a_refusal_becomes_an_error_frame_with_the_id() -> None:
    err = refusal(dumps({"op": "subscribe", "channel": 5, "id": "r7"}))
    frame = as_json(protocol.error(err.code, err.message, err.client_id))
    assert frame == {
        "type": "error",
        "code": "validation_error",
        "message": err.message,
        "id": "r7",
    }


# Server frames ---------------------------------------------------------------------------------


def test_welcome_frame() -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert as_json(protocol.welcome("c-1", 42, 25, expires)) == {
        "type": "welcome",
        "connection_id": "c-1",
        "user_id": 42,
        "protocol": 1,
        "heartbeat_s": 25,
        "expires_at": "2030-01-02T03:04:05Z",
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("ride:1", 18, True, None),
            {"type": "subscribed", "channel": "ride:1", "seq": 18, "recovered": True},
        ),
        (
            ("ride:1", 0, True, 3),
            {"type": "subscribed", "channel": "ride:1", "seq": 0, "recovered": True, "id": 3},
        ),
        (
            ("ride:1", 1200, False, "s"),
            {"type": "subscribed", "channel": "ride:1", "seq": 1200, "recovered": False, "id": "s"},
        ),
        # the live-only `rides` channel: no seq
        (
            ("rides", None, True, 0),
            {"type": "subscribed", "channel": "rides", "recovered": True, "id": 0},
        ),
    ],
)
def test_subscribed_frame(args: tuple[str, int | None, bool, ClientId], expected: Any) -> None:
    assert as_json(protocol.subscribed(*args)) == expected


def test_unsubscribed_frames() -> None:
    assert as_json(protocol.unsubscribed("ride:1", client_id=4)) == {
        "type": "unsubscribed",
        "channel": "ride:1",
        "id": 4,
    }
    # unprompted, when the user loses access
    assert as_json(protocol.unsubscribed("ride:1:chat", "forbidden")) == {
        "type": "unsubscribed",
        "channel": "ride:1:chat",
        "reason": "forbidden",
    }


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_frame(code: ErrorCode) -> None:
    assert as_json(protocol.error(code, "nope")) == {
        "type": "error",
        "code": code.value,
        "message": "nope",
    }
    assert as_json(protocol.error(code, "nope", "q")) == {
        "type": "error",
        "code": code.value,
        "message": "nope",
        "id": "q",
    }


def test_error_codes_are_the_contracts() -> None:
    assert {c.value for c in ErrorCode} == {
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "validation_error",
        "rate_limited",
        "too_large",
        "internal_error",  # PROTOCOL.md section 6
    }


# WebSocket framing -----------------------------------------------------------------------------


def read_frame(data: bytes) -> tuple[Frame, bool]:
    """Parse one server frame with the websockets library; also whether all bytes were used."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame: Frame = done.value.value
    at_eof = reader.at_eof()
    with pytest.raises(StopIteration) as eof:
        next(at_eof)
    return frame, bool(eof.value.value)


@pytest.mark.parametrize(
    ("length", "header"), [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)]
)
def test_ws_text_frame_is_one_unmasked_final_text_frame(length: int, header: int) -> None:
    payload = (b'{"type":"event","data":"' + b"x" * length)[:length]
    data = protocol.ws_text_frame(payload)
    assert len(data) == header + length  # the shortest length encoding, as RFC 6455 requires
    frame, consumed = read_frame(data)
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload
    assert consumed


def test_ws_text_frame_carries_an_encoded_event() -> None:
    event = {"type": "event", "channel": "ride:1", "seq": 1, "event": "e", "data": {"t": "é"}}
    payload = protocol.encode(event)
    frame, _ = read_frame(protocol.ws_text_frame(payload))
    assert orjson.loads(frame.data) == event


# Broker envelopes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"", b"{}", b'{"type":"event","seq":3}', b"line1\nline2\n", b"\x00\xff"]
)
def test_durable_envelope_round_trip(payload: bytes) -> None:
    decoded = envelope.decode(envelope.durable(18, 3, 1_700_000_000.5, payload))
    assert decoded == envelope.Durable(18, 3, 1_700_000_000.5, payload)


def test_published_at_keeps_microseconds() -> None:
    decoded = envelope.decode(envelope.durable(1, 0, 1_700_000_000.123456, b"{}"))
    assert isinstance(decoded, envelope.Durable)
    assert abs(decoded.published_at - 1_700_000_000.123456) < 1e-6


@pytest.mark.parametrize("exclude", [0, 7])
def test_ephemeral_envelope_round_trip(exclude: int) -> None:
    payload = b'{"type":"event","event":"typing"}\n'
    decoded = envelope.decode(envelope.ephemeral(exclude, 1_700_000_000.25, payload))
    assert decoded == envelope.Ephemeral(exclude, 1_700_000_000.25, payload)


def test_revoked_envelope_round_trip() -> None:
    assert envelope.decode(envelope.revoked(4)) == envelope.Revoked(4)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\n{}",
        b"X 1 2 3\n{}",
        b"d 1 2 3.0\n{}",
        b"D 1 2\n{}",
        b"D 1 2 3.0 4\n{}",
        b"D one 2 3.0\n{}",
        b"D 1 2 later\n{}",
        b"D  1 2 3.0\n{}",
        b"E 1\n{}",
        b"E 1 2 3\n{}",
        b"E x 1.0\n{}",
        b"R\n",
        b"R 1 2\n",
        b"R x\n",
        b'{"type":"event"}',
    ],
)
def test_malformed_envelopes_are_refused(message: bytes) -> None:
    with pytest.raises(ValueError, match=r"malformed|invalid literal|could not convert"):
        envelope.decode(message)
