"""The load tool's delivery accounting: what it calls lost, duplicated and out of order."""

from __future__ import annotations

import math
import random

import pytest

from kuda.loadtest.accounting import Histogram, SeqStream, Tally, total


def feed(*seqs: int, start: int = 0) -> SeqStream:
    stream = SeqStream(start)
    for n in seqs:
        stream.observe(n)
    return stream


def test_in_order_stream_is_complete() -> None:
    s = feed(1, 2, 3, 4)
    assert s.tally(4) == Tally(received=4, lost=0, duplicated=0, out_of_order=0)
    assert s.complete(4)


def test_a_stream_starts_after_its_subscription_point() -> None:
    s = feed(11, 12, start=10)
    assert s.tally(12) == Tally(2, 0, 0, 0)
    assert s.complete(12)


def test_missing_tail_is_lost() -> None:
    s = feed(1, 2)
    assert s.lost(5) == 3
    assert not s.complete(5)


def test_a_gap_never_filled_is_lost() -> None:
    s = feed(1, 2, 5, 6)
    assert s.tally(6) == Tally(received=4, lost=2, duplicated=0, out_of_order=0)
    assert not s.complete(6)


def test_a_late_event_fills_its_hole_and_counts_out_of_order_not_lost() -> None:
    s = feed(1, 3, 2, 4)
    assert s.tally(4) == Tally(received=4, lost=0, duplicated=0, out_of_order=1)
    assert s.complete(4)


def test_filling_the_middle_of_a_wide_hole_splits_it() -> None:
    s = feed(1, 10, 5)
    assert s.out_of_order == 1
    assert s.lost(10) == 7  # 2, 3, 4, 6, 7, 8, 9
    for n in (2, 3, 4, 6, 7, 8, 9):
        s.observe(n)
    assert s.tally(10) == Tally(received=10, lost=0, duplicated=0, out_of_order=8)


def test_repeats_are_duplicates() -> None:
    s = feed(1, 2, 2, 3, 1)
    assert s.tally(3) == Tally(received=5, lost=0, duplicated=2, out_of_order=0)


def test_an_event_at_or_below_the_start_is_a_duplicate() -> None:
    s = feed(10, 11, start=10)
    assert s.duplicated == 1
    assert s.lost(11) == 0


def test_a_late_event_repeated_is_out_of_order_once_then_duplicate() -> None:
    s = feed(1, 3, 2, 2)
    assert (s.out_of_order, s.duplicated, s.lost(3)) == (1, 1, 0)


def test_a_huge_jump_costs_one_range_not_memory_per_number() -> None:
    s = feed(1, 10**12)
    assert s.lost(10**12) == 10**12 - 2
    assert len(s._holes) == 1


def test_random_shuffles_account_for_every_number() -> None:
    rng = random.Random(5)
    for _ in range(200):
        n = rng.randint(1, 60)
        seqs = list(range(1, n + 1))
        dropped = set(rng.sample(seqs, rng.randint(0, n // 3)))
        kept = [x for x in seqs if x not in dropped]
        dups = rng.sample(kept, min(len(kept), rng.randint(0, 3)))
        arrivals = kept + dups
        rng.shuffle(arrivals)
        s = feed(*arrivals)
        t = s.tally(n)
        assert t.received == len(arrivals)
        assert t.lost == len(dropped)
        assert t.duplicated == len(dups)
        assert t.lost + t.received - t.duplicated == n


def test_total_adds_streams() -> None:
    t = total([feed(1, 2, 3), feed(1, 3), feed(1, 1, 2, 3)], expected_last=3)
    assert t == Tally(received=9, lost=1, duplicated=1, out_of_order=0)


def test_histogram_percentiles_within_its_precision() -> None:
    h = Histogram()
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1 s
    random.Random(1).shuffle(values)
    for v in values:
        h.record(v)
    for q, exact in ((0.5, 0.5), (0.9, 0.9), (0.99, 0.99)):
        assert h.percentile(q) == pytest.approx(exact, rel=0.02)
        assert h.percentile(q) >= exact * 0.999  # never understates
    assert h.percentile(1.0) == 1.0
    assert h.max == 1.0 and h.count == 1000


def test_histogram_counts_negative_values_instead_of_hiding_them() -> None:
    h = Histogram()
    h.record(-0.002)
    h.record(0.010)
    assert h.negative == 1 and h.min == -0.002
    assert h.percentile(1.0) == 0.010


def test_histograms_merge_through_their_wire_form() -> None:
    a, b = Histogram(), Histogram()
    for v in (0.001, 0.002, 0.003):
        a.record(v)
    for v in (0.1, 0.2):
        b.record(v)
    merged = Histogram.from_dict(a.to_dict())
    merged.merge(Histogram.from_dict(b.to_dict()))
    assert merged.count == 5 and merged.max == 0.2 and merged.min == 0.001
    assert merged.percentile(0.5) == pytest.approx(0.003, rel=0.02)


def test_empty_histogram() -> None:
    h = Histogram.from_dict(Histogram().to_dict())
    assert h.count == 0 and math.isnan(h.percentile(0.5))
