"""Property tests (hypothesis) for the parsers that face hostile input: the socket frame parser,
the channel-name parser and the pagination cursor codec. Each must either accept a value as
exactly what it says or refuse it with the contract's error; nothing else may escape."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from channels import protocol
from channels.authz import Access, ChannelError, ChannelRegistry, Params
from channels.codes import ErrorCode
from server.errors import ValidationFailed
from server.pagination import decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor
from server.validation import MAX_ID, parse_instant

FAST = settings(max_examples=300, deadline=None)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ops = st.sampled_from(["subscribe", "unsubscribe", "ping", "auth", "send", "typing", "presence"])
frames = st.fixed_dictionaries(
    {"op": ops | json_values},
    optional={
        "id": json_values,
        "channel": st.text(max_size=300) | json_values,
        "since": st.integers() | json_values,
        "token": st.text(max_size=100) | json_values,
        "body": st.text(max_size=100) | json_values,
        "client_id": st.text(max_size=80) | json_values,
    },
)


def _parse(text: str) -> protocol.Op | None:
    try:
        return protocol.parse(text)
    except protocol.FrameError as exc:
        error = exc
    assert error.code in ErrorCode and error.message
    return None


@FAST
@given(st.text(max_size=400))
def test_any_text_is_an_op_or_a_frame_error(text: str) -> None:
    _parse(text)


@FAST
@given(frames)
def test_any_json_frame_is_an_op_or_a_frame_error(frame: dict[str, Any]) -> None:
    try:
        text = orjson.dumps(frame).decode()
    except TypeError:  # integers beyond 64 bits: use Python's encoder, the peer may too
        import json

        text = json.dumps(frame)
    op = _parse(text)
    if op is not None:
        assert frame["op"] == type(op).__name__.lower()
        if hasattr(op, "channel"):
            assert op.channel == frame["channel"]


@FAST
@given(
    st.text(min_size=1, max_size=200),
    st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    st.none() | st.integers(min_value=-(2**53), max_value=2**53) | st.text(max_size=64),
)
def test_a_valid_subscribe_parses_to_exactly_what_was_sent(
    channel: str, since: int | None, client_id: int | str | None
) -> None:
    frame: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if since is not None:
        frame["since"] = since
    if client_id is not None:
        frame["id"] = client_id
    op = protocol.parse(orjson.dumps(frame).decode())
    assert op == protocol.Subscribe(client_id, channel, since)


async def _allow(user_id: int, params: Params) -> Access:
    return Access.ALLOW


def _registry() -> ChannelRegistry:
    registry = ChannelRegistry()
    for template in ("user:{id}", "ride:{id}", "ride:{id}:chat"):
        registry.register(template, _allow)
    registry.register("rides", _allow, durable=False)
    return registry


REGISTRY = _registry()
ids = st.integers(min_value=1, max_value=10**18 - 1)


@FAST
@given(st.text(max_size=60) | st.from_regex(r"(user|ride):[0-9]{1,20}(:chat)?\s?", fullmatch=True))
@example("user:1\n")  # found by this test: `$` matched before a trailing newline
@example("ride:7:chat\n")
def test_a_channel_name_resolves_to_itself_or_is_a_bad_request(name: str) -> None:
    try:
        resolved = REGISTRY.resolve(name)
    except ChannelError as exc:
        refused = exc
    else:
        canonical = resolved.kind.template.replace("{id}", resolved.params.get("id", ""))
        assert resolved.name == name == canonical
        assert all(0 < int(v) <= MAX_ID for v in resolved.params.values())
        return
    assert refused.code is ErrorCode.BAD_REQUEST


@FAST
@given(ids, st.sampled_from(["user:{}", "ride:{}", "ride:{}:chat"]))
def test_every_well_formed_channel_resolves_with_its_id(object_id: int, template: str) -> None:
    resolved = REGISTRY.resolve(template.format(object_id))
    assert resolved.params == {"id": str(object_id)}


@FAST
@given(st.text(max_size=120))
def test_any_cursor_text_decodes_or_is_a_validation_error(text: str) -> None:
    for size in (1, 2, 3):
        try:
            values = decode_cursor(text, size)
        except ValidationFailed:
            continue
        assert isinstance(values, list) and len(values) == size
    try:
        value = decode_id_cursor(text)
    except ValidationFailed:
        return
    assert 0 < value <= MAX_ID


@FAST
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(), max_size=3))
def test_cursors_round_trip(values: list[Any]) -> None:
    assert decode_cursor(encode_cursor(values), len(values)) == values


@FAST
@given(st.integers(min_value=1, max_value=MAX_ID))
def test_id_cursors_round_trip(value: int) -> None:
    assert decode_id_cursor(encode_id_cursor(value)) == value


@FAST
@given(st.text(max_size=40) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()))
def test_an_instant_in_a_cursor_is_utc_or_a_value_error(text: str) -> None:
    try:
        value = parse_instant(text)
    except ValueError:
        return
    assert value.tzinfo is UTC or value.utcoffset() is not None
