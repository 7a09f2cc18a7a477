"""Recording's cost (issue 5): one daemon, recording switched between windows.

Two daemons side by side, one recording and one not, cannot settle a 10 %
claim on this two-core VM: two *identical* plain daemons, alternated the
same way for 8 windows each, differed by up to 13 % (docs/performance.md),
and which one was faster changed from run to run. So the same daemon
answers both sides: started with ``[record]`` configured but off, it gets
SIGUSR1 (the admin's own switch) before each change of side, and the load
generator alternates windows in ABBA order (off, on, on, off, ...), so that
a slow minute of the machine falls on both sides alike. Each window checks
that recording was what it claims: the recording grew during an "on"
window and did not during an "off" one; a window that fails this stops the
run. The share is the "on" windows' requests per second over the "off"
windows', each summed over all its windows.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from measure import Level, Plan, run_level

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager
    from pathlib import Path

    from servers import Running

OFF, ON = "paired-off", "paired-on"
ROUNDS = 24  # each round is an off and an on window; ABBA order over two rounds
SETTLE = 0.5  # seconds after a switch: records of the last window are written by then


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
    start: Callable[[], AbstractContextManager[Running]],
    recording: Path,
    loadgen: Path,
    corpus: Path,
    plan: Plan,
    show: Callable[[Level], None],
) -> list[Level]:
    """Alternate ``plan`` between recording off and on in the daemon ``start()`` serves.

    ``recording`` is the file the daemon's ``[record]`` writes (rotated
    files beside it); the daemon starts with recording off.
    """
    levels: list[Level] = []
    with start() as live:
        sides = {on: dataclasses.replace(live, name=ON if on else OFF) for on in (False, True)}
        state = False
        for index in range(ROUNDS):
            for on in (False, True) if index % 2 == 0 else (True, False):
                if on != state:
                    os.kill(live.pid, signal.SIGUSR1)
                    state = on
                    time.sleep(SETTLE)  # the last records of an "on" window reach the file
                before = _written(recording)
                level = run_level(loadgen, corpus, sides[on], plan)
                if (_written(recording) != before) != on:
                    side = "on" if on else "off"
                    raise RuntimeError(f"recording was not {side} in window {index} as it should")
                levels.append(level)
                show(level)
    return levels


def _written(recording: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of each file of the recording: changes as it grows."""
    files = sorted(recording.parent.glob(recording.name + "*"))
    found = []
    for file in files:
        try:
            stat = file.stat()
        except FileNotFoundError:  # rotated away meanwhile
            continue
        found.append((file.name, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


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
