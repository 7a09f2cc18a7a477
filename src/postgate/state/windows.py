"""Sliding windows of sub-buckets: what "100 per hour" counts, on a clock the caller gives.

A window of ``seconds`` is cut into `SLOTS` sub-buckets of a tenth of it;
a key keeps one counter per sub-bucket in a ring of ``SLOTS + 1`` cells
plus the number of the newest sub-bucket written (the *head*). The count
of a window is the sum of the current sub-bucket and the `SLOTS` before it,
so a charge made at time t is counted until between t + window and
t + 1.1 x window: no span of the window's length ever holds more than
the limit, and a charge is forgotten at most a tenth of the window late.
Memory is bounded per key and window (2 to 12 integers) whatever the
traffic, unlike a log of every message; docs/rules.md, Rate limits, compares it
with a fixed window and a sliding log.

Pure functions on a plain ``list[int]`` (`Ring`) so that the store, its
file and a future Redis script share one layout.
"""

from __future__ import annotations

import math
from typing import Final

SLOTS: Final = 10  # sub-buckets per window: the accuracy is window / SLOTS
CELLS: Final = SLOTS + 1  # the current sub-bucket and the SLOTS before it
EMPTY_HEAD: Final = -(1 << 62)  # no charge yet

# ``[head, count at head, count at head - 1, ...]``: newest first, and only
# as long as the oldest non-zero cell, so a key charged once holds two numbers.
Ring = list[int]


def new_ring() -> Ring:
    return [EMPTY_HEAD]


def bucket(seconds: int, now: float) -> int:
    """The sub-bucket ``now`` falls in, numbered from the epoch."""
    return math.floor(now * SLOTS / seconds)


def _alive(ring: Ring, current: int) -> int:
    """How many cells, from the newest, are still inside the window at ``current``."""
    return max(CELLS - max(current - ring[0], 0), 0)


def count(ring: Ring, seconds: int, now: float) -> int:
    """What the window holds at ``now``."""
    return sum(ring[1 : 1 + _alive(ring, bucket(seconds, now))])


def add(ring: Ring, seconds: int, now: float, weight: int) -> None:
    """Charge ``weight`` at ``now``; cells that fell out of the window are dropped."""
    current = bucket(seconds, now)
    gap = current - ring[0]
    if gap <= 0:  # the same sub-bucket (or a clock stepped back): the newest cell
        ring[1] += weight
        return
    kept = ring[1 : 1 + max(CELLS - gap, 0)]
    ring[:] = [current, weight, *([0] * (gap - 1) if kept else ()), *kept]
    while ring[-1] == 0 and len(ring) > 2:
        ring.pop()


def retry(ring: Ring, seconds: int, now: float, room: int) -> float:
    """Seconds until the window holds at most ``room``; ``math.inf`` when room < 0."""
    if room < 0:
        return math.inf
    alive = _alive(ring, bucket(seconds, now))
    excess = sum(ring[1 : 1 + alive]) - room
    if excess <= 0:
        return 0.0
    freed = 0
    for age in range(min(alive, len(ring) - 1) - 1, -1, -1):  # the oldest cell first
        freed += ring[1 + age]
        if freed >= excess:
            return max((ring[0] - age + CELLS) * seconds / SLOTS - now, 0.0)
    return float(seconds)  # unreachable: the whole count frees by then


def expires(ring: Ring, seconds: int) -> float:
    """When every charge in the ring has left the window: the key may then be dropped."""
    return (ring[0] + CELLS) * seconds / SLOTS


__all__ = ["CELLS", "SLOTS", "Ring", "add", "bucket", "count", "expires", "new_ring", "retry"]
