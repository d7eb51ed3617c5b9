"""Pure tests of the client's ordering and backoff rules (no I/O)."""

from __future__ import annotations

import random

import pytest

from kuda.client import Action, Backoff, after_close
from kuda.client.ordering import Sequencer
from kuda.client.tokens import Token, refresh_delay


def ev(seq: int) -> dict[str, object]:
    return {"type": "event", "channel": "c", "seq": seq}


def delivered(seq: Sequencer, *offered: int) -> list[int]:
    out: list[int] = []
    for s in offered:
        out += [int(f["seq"]) for f in seq.offer(ev(s))]
    return out


def test_each_seq_once_in_order_whatever_the_arrival_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        arrivals = [s for s in range(1, 41) for _ in range(rng.randint(1, 3))]
        rng.shuffle(arrivals)
        seq = Sequencer(0)
        assert delivered(seq, *arrivals) == list(range(1, 41))
        assert not seq.wants_fill and seq.held == 0


def test_an_early_seq_is_held_and_reported_as_a_gap() -> None:
    seq = Sequencer(3)
    assert delivered(seq, 2, 3, 6) == []
    assert seq.wants_fill and seq.held == 1
    assert delivered(seq, 4) == [4]
    assert seq.wants_fill
    assert delivered(seq, 5) == [5, 6]
    assert not seq.wants_fill


def test_no_position_until_started_then_from_the_ack() -> None:
    seq = Sequencer(None)
    assert delivered(seq, 1, 2) == [] and not seq.wants_fill
    assert seq.start(10) == [] and seq.last == 10
    assert delivered(seq, 10, 11) == [11]


def test_an_ack_ahead_of_the_position_is_a_gap_to_fill() -> None:
    seq = Sequencer(5)
    seq.expect(9)
    assert seq.wants_fill
    assert delivered(seq, 6, 7, 8, 9) == [6, 7, 8, 9] and not seq.wants_fill


def test_a_full_holding_area_drops_to_the_rest_replay_and_reset_moves_on() -> None:
    seq = Sequencer(0, max_held=3)
    assert delivered(seq, 3, 4, 5, 6) == []
    assert seq.overflowed and seq.held == 0 and seq.wants_fill
    seq.reset(5)
    assert seq.wants_fill  # 6 was seen: still a gap
    assert seq.reset(6) == [] and seq.last == 6 and not seq.wants_fill
    assert delivered(seq, 8, 7) == [7, 8]


def test_full_jitter_stays_under_the_growing_ceiling_and_resets_after_a_stable_link() -> None:
    backoff = Backoff(min_s=0.5, max_s=20.0, stable_s=10.0, rng=random.Random(1))
    for attempt in range(12):
        ceiling = min(20.0, 0.5 * 2**attempt)
        assert 0 <= backoff.next() <= ceiling
    assert backoff.attempt == 12
    backoff.connected_for(3.0)
    assert backoff.attempt == 12  # a short-lived connection does not reset it
    backoff.connected_for(10.0)
    assert backoff.attempt == 0


def test_delays_spread_over_the_window_rather_than_bunching() -> None:
    backoff = Backoff(min_s=1, max_s=1, rng=random.Random(3))
    delays = sorted(backoff.next() for _ in range(1000))
    deciles = [delays[i] for i in range(0, 1000, 100)]
    assert all(abs(d - i / 10) < 0.06 for i, d in enumerate(deciles))


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (1000, Action.STOP),
        (1012, Action.RESTART),
        (4401, Action.RENEW),
        (4429, Action.SLOW_DOWN),
        (4403, Action.BACKOFF),
        (1011, Action.BACKOFF),
        (1006, Action.BACKOFF),
        (1008, Action.BACKOFF),
    ],
)
def test_what_each_close_code_does(code: int, action: Action) -> None:
    assert after_close(code) is action


def test_pauses_per_action() -> None:
    backoff = Backoff(min_s=0.5, max_s=20, restart_s=1.0, slow_down_s=2.0, rng=random.Random(5))
    assert all(0 <= backoff.delay(Action.RESTART, 0) <= 1.0 for _ in range(50))
    assert all(backoff.delay(Action.SLOW_DOWN, 0) >= 2.0 for _ in range(50))
    assert backoff.delay(Action.RENEW, 60.0) == 0.0  # a long-lived socket renews at once


def test_the_token_is_refreshed_at_eighty_percent_of_its_life() -> None:
    token = Token("t", obtained_at=1000.0)
    assert refresh_delay(token, 1900.0, 0.8, now=1000.0) == pytest.approx(720.0)
    assert refresh_delay(token, 1900.0, 0.8, now=1800.0) == 0.0
