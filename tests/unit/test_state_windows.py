"""The sliding window on a fake clock: edges, weights, several windows, expiry."""

from __future__ import annotations

import math
import random

from postgate.state import windows as w

HOUR = 3600


def test_a_charge_counts_for_at_least_the_window_and_at_most_a_tenth_more() -> None:
    ring = w.new_ring()
    w.add(ring, HOUR, 1000.0, 1)
    assert 1 == w.count(ring, HOUR, 1000.0 + HOUR - 0.001)
    assert 1 == w.count(ring, HOUR, 1000.0 + HOUR)
    assert 0 == w.count(ring, HOUR, 1000.0 + 1.1 * HOUR)


def test_at_a_sub_bucket_edge_the_charge_leaves_exactly_one_window_later() -> None:
    ring = w.new_ring()
    w.add(ring, HOUR, 0.0, 1)  # the start of a sub-bucket: the exact case
    assert 1 == w.count(ring, HOUR, HOUR - 0.001)
    assert 1 == w.count(ring, HOUR, HOUR + 359.999)
    assert 0 == w.count(ring, HOUR, HOUR + 360.0)


def test_no_span_of_one_window_ever_holds_more_than_the_limit() -> None:
    # 100 per hour, sent as fast as allowed for 5 hours, one try a second.
    ring, sent = w.new_ring(), []
    for second in range(5 * HOUR):
        if w.count(ring, HOUR, second) + 1 <= 100:
            w.add(ring, HOUR, second, 1)
            sent.append(second)
    worst = max(sum(1 for s in sent if start <= s < start + HOUR) for start in sent)
    assert 100 == worst
    # and the rate is at least 100 per 1.1 hours
    assert len(sent) >= 5 * 100 / 1.1


def test_weights_count_recipients_or_bytes() -> None:
    ring = w.new_ring()
    w.add(ring, 60, 0.0, 7)
    w.add(ring, 60, 30.0, 5)
    assert 12 == w.count(ring, 60, 30.0)
    assert 5 == w.count(ring, 60, 66.0)


def test_several_windows_are_rings_of_their_own() -> None:
    minute, day = w.new_ring(), w.new_ring()
    for t in range(0, 600, 10):
        w.add(minute, 60, t, 1)
        w.add(day, 86400, t, 1)
    assert (6 <= w.count(minute, 60, 600.0) <= 7, 60) == (True, w.count(day, 86400, 600.0))


def test_retry_says_when_enough_has_left_the_window() -> None:
    ring = w.new_ring()
    w.add(ring, HOUR, 0.0, 3)
    w.add(ring, HOUR, 1800.0, 2)
    assert 0.0 == w.retry(ring, HOUR, 1900.0, 5)
    # The first 3 leave when their sub-bucket (0-360 s) is 11 sub-buckets old.
    assert 3960.0 - 1900.0 == w.retry(ring, HOUR, 1900.0, 4)
    assert 1800.0 + 3960.0 - 1900.0 == w.retry(ring, HOUR, 1900.0, 0)
    assert math.inf == w.retry(ring, HOUR, 1900.0, -1)


def test_expiry_is_when_the_last_charge_left() -> None:
    ring = w.new_ring()
    w.add(ring, HOUR, 100.0, 1)
    assert 0 == w.count(ring, HOUR, w.expires(ring, HOUR))
    assert 1 == w.count(ring, HOUR, w.expires(ring, HOUR) - 1)


def test_a_clock_stepped_back_keeps_what_was_counted() -> None:
    ring = w.new_ring()
    w.add(ring, HOUR, 5000.0, 2)
    w.add(ring, HOUR, 4000.0, 1)
    assert 3 == w.count(ring, HOUR, 4000.0)


def test_a_long_idle_key_starts_again_from_zero() -> None:
    ring = w.new_ring()
    w.add(ring, 60, 0.0, 4)
    w.add(ring, 60, 1e6, 1)
    assert 1 == w.count(ring, 60, 1e6)


def test_counts_and_waits_agree_with_a_log_of_every_charge() -> None:
    """Against the definition: a charge counts while its sub-bucket is one of the last 11."""
    rng = random.Random(7)
    ring, log, now = w.new_ring(), [], 0.0
    for _ in range(3000):
        now += rng.choice((0.0, 1.0, 7.0, 60.0, 400.0))
        if rng.random() < 0.7:
            weight = rng.randint(1, 5)
            w.add(ring, 600, now, weight)
            log.append((w.bucket(600, now), weight))
        current = w.bucket(600, now)
        alive = [(b, n) for b, n in log if b >= current - w.SLOTS]
        assert sum(n for _, n in alive) == w.count(ring, 600, now)
        room = rng.randint(0, 20)
        wait = w.retry(ring, 600, now, room)
        assert w.count(ring, 600, now + wait) <= room
        if wait > 0:
            assert w.count(ring, 600, now + wait - 0.001) > room
    assert len(ring) <= 1 + w.CELLS
