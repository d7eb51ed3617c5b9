"""A socket fuzzer against a live server: 10,000+ random and hostile frames from two users. Every
answer must be per contract (a known frame type; errors with a contract code, never
`internal_error`, which would be a server failure), the sockets stay open except where the
contract closes them (binary 1003, oversized 1009), and afterwards the instance is healthy: it
still serves REST and delivers events, and it logged no error."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from channels.codes import ErrorCode
from tests.domain.conftest import make_ride
from tests.helpers import Account, signup
from tests.live import LiveServer, WsClient, ws_connect

pytestmark = pytest.mark.slow

FRAMES = 10_500
BATCH = 150
TYPES = {"welcome", "event", "subscribed", "unsubscribed", "pong", "authed", "ack", "error",
         "presence"}  # fmt: skip
CODES = {c.value for c in ErrorCode} - {ErrorCode.INTERNAL_ERROR.value}


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, hostile where it can be (huge, negative, control characters)."""
    scalars: list[Callable[[], Any]] = [
        lambda: None,
        lambda: True,
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.random() * 1e300,
        lambda: "x" * rng.randrange(300),
        lambda: "\u202e\u0000\ud7ff\ufffd",
        lambda: rng.choice([-1, 0, 2**63]),
    ]
    if depth < 3:
        scalars += [lambda: [_value(rng, depth + 1)], lambda: {"k": _value(rng, depth + 1)}]
    return rng.choice(scalars)()


def _channel(rng: random.Random, me: Account, other: Account, ride: int) -> Any:
    return rng.choice([
        f"user:{me.id}", f"user:{other.id}", f"ride:{ride}", f"ride:{ride}:chat", "rides",
        f"ride:{rng.randint(1, 10**18)}", f"ride:{ride}:chat\n", "user:0", "user:01", "stats",
        "ride:1:chat:x", " rides", "user:" + "9" * 40, "", _value(rng),
    ])  # fmt: skip


def _frame(rng: random.Random, me: Account, other: Account, ride: int) -> str:
    roll = rng.random()
    if roll < 0.08:  # not JSON, not an object, hostile JSON
        return rng.choice([
            "{", "[]", "null", "1e999999", '{"op": NaN}', '{"op":"ping","op":"subscribe"}',
            "[" * 5000 + "]" * 5000, '{"op":"send","body":"\\ud800"}', "\u0000", " ",
            '{"op":"ping","id":"' + "\\u0000" * 10 + '"}', json.dumps({"op": "ping"}) * 3,
        ])  # fmt: skip
    frame: dict[str, Any] = {"op": rng.choice(
        ["subscribe", "unsubscribe", "ping", "auth", "send", "typing", "presence", "nope",
         "SUBSCRIBE", _value(rng)]
    )}  # fmt: skip
    for key, make in (
        ("channel", lambda: _channel(rng, me, other, ride)),
        ("since", lambda: rng.choice([0, 1, 5, 10**6, -1, 2**64, 1.5, "3", None])),
        (
            "id",
            lambda: rng.choice(
                [rng.randint(-(2**53), 2**53), "x" * rng.randrange(70), True, [1], None]
            ),
        ),
        ("body", lambda: rng.choice(["hi", "", " ", "y" * 2001, _value(rng)])),
        ("token", lambda: rng.choice([me.access_token, other.access_token, "x.y.z", "", None])),
        ("client_id", lambda: rng.choice(["c1", "", "z" * 65, _value(rng)])),
    ):
        if rng.random() < 0.6:
            frame[key] = make()
    return json.dumps(frame)


async def _drain_to(ws: WsClient, barrier: str, seen: Counter[str]) -> None:
    """Read and check every frame up to the pong that answers `barrier`."""
    while True:
        frame = await ws.recv(30)
        assert isinstance(frame, dict) and frame.get("type") in TYPES, frame
        seen[frame["type"]] += 1
        if frame["type"] == "error":
            assert frame["code"] in CODES, frame  # never internal_error
            assert isinstance(frame["message"], str) and frame["message"], frame
        if frame["type"] == "pong" and frame.get("id") == barrier:
            return


async def _fuzz(
    live: LiveServer, me: Account, other: Account, ride: int, seed: int
) -> Counter[str]:
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    sent = 0
    while sent < FRAMES:
        async with ws_connect(live.ws_url, me.access_token, max_size=None) as ws:
            await ws.expect("welcome")
            try:
                while sent < FRAMES:
                    for _ in range(BATCH):
                        await ws.send(_frame(rng, me, other, ride))
                        sent += 1
                    if rng.random() < 0.02:  # the contract's closes: binary and oversized
                        await ws.send(rng.choice([b"\x00\x01", "z" * (65 * 1024)]))
                        sent += 1
                        await _drain_to(ws, "until the close", seen)
                    barrier = f"b{sent}"
                    await ws.send({"op": "ping", "id": barrier})
                    await _drain_to(ws, barrier, seen)
            except ConnectionClosed as exc:
                closed = exc
            else:
                continue
        code = closed.rcvd.code if closed.rcvd is not None else None
        assert code in (1003, 1009), closed
        seen[f"close {code}"] += 1
    return seen


async def test_ten_thousand_hostile_frames_get_contract_answers_and_the_instance_stays_healthy(
    live_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    live: LiveServer = await live_factory(ws_ops_per_s=100_000, ws_ops_burst=100_000)
    async with httpx.AsyncClient(base_url=live.http) as http:
        me, other = await signup(http), await signup(http)
        ride = (await make_ride(http, other))["id"]
        with caplog.at_level(logging.WARNING):
            seen = await _fuzz(live, me, other, ride, seed=8)
        print(f"\nsocket fuzzer: {FRAMES} frames, answers {dict(seen)}")
        assert seen["error"] > 1000 and seen["pong"] > 0
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        assert (await http.get("/healthz")).status_code == 200
        async with ws_connect(live.ws_url, other.access_token) as ws:  # still delivers events
            await ws.expect("welcome")
            assert (await ws.request({"op": "subscribe", "channel": f"ride:{ride}"}))[
                "type"
            ] == "subscribed"
            r = await http.post(f"/api/v1/rides/{ride}/cancel", headers=other.headers)
            assert r.status_code == 200
            assert (await ws.expect("event"))["event"] == "ride.cancelled"
