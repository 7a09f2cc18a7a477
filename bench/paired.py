"""Recording's cost (issue 5) from alternating windows, both daemons up at once.

Measured one after the other, two runs of the same daemon on this two-core
VM differ by up to 15 %, more than the 10 % the claim allows, so the
sequential `postgate` and `postgate-recording` rows cannot settle it. Here
both daemons run side by side (the idle one waits in epoll and costs
nothing), and the load generator alternates between them in ABBA order
(off, on, on, off, ...), so that a slow minute of the machine falls on both
sides alike. The share is the recording daemon's requests per second of
window over the plain daemon's, each summed over all its windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from measure import Level, Plan, run_level

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager
    from pathlib import Path

    from servers import Running

OFF, ON = "paired-off", "paired-on"
ROUNDS = 16  # each round is an off and an on window; ABBA order over two rounds


@dataclass(frozen=True, slots=True)
class Paired:
    """The summed windows of each side, and the share of each round."""

    off_rps: float
    on_rps: float
    rounds: tuple[float, ...]

    @property
    def share(self) -> float:
        return self.on_rps / self.off_rps if self.off_rps else 0.0


def measure(
    start: Callable[[str], AbstractContextManager[Running]],
    loadgen: Path,
    corpus: Path,
    plan: Plan,
    show: Callable[[Level], None],
) -> list[Level]:
    """Alternate ``plan`` between the daemons ``start(OFF)`` and ``start(ON)`` serve."""
    levels: list[Level] = []
    with start(OFF) as off, start(ON) as on:
        for index in range(ROUNDS):
            for live in (off, on) if index % 2 == 0 else (on, off):
                level = run_level(loadgen, corpus, live, plan)
                levels.append(level)
                show(level)
    return levels


def summarise(levels: Sequence[Level]) -> Paired | None:
    """Requests per second of window on each side; None unless both sides ran."""
    off = [lv for lv in levels if lv.server == OFF]
    on = [lv for lv in levels if lv.server == ON]
    if not off or not on or len(off) != len(on):
        return None
    rounds = tuple(b.rps / a.rps if a.rps else 0.0 for a, b in zip(off, on, strict=True))
    return Paired(_rate(off), _rate(on), rounds)


def _rate(levels: Sequence[Level]) -> float:
    window = sum(lv.window_s for lv in levels)
    return sum(lv.requests for lv in levels) / window if window else 0.0
