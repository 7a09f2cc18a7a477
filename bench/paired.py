"""Recording's cost: one daemon, recording switched every half second.

Two daemons side by side cannot settle a 10 % claim on this two-core VM:
two *identical* plain daemons, alternated for 8 windows each, differed by
up to 13 % (docs/performance.md). One daemon switched between windows of
3 s (the method until 2026-11-29) did better, but single pairs of windows
still ranged from 63 % to 127 %: the machine's speed moves by tens of
percent from one second to the next, so 24 rounds left the share
uncertain by about ±4 %.

So the switching goes inside one run of the load generator, faster than
the machine drifts. The daemon starts with ``[record]`` configured but
off; the load generator prints its reply count every `TICK` seconds; at
each tick this driver sends SIGUSR1 (the admin's own switch) whenever the
next phase's side differs, in ABBA order (off, on, on, off, ...), so each
block of four phases cancels a linear drift. The share is the "on" phases'
replies over the "off" phases', and a bootstrap over the blocks gives its
95 % interval.

Checks that recording was what it claims: the records added to the file
during the run, plus those the daemon dropped and counted (its last
``record_dropped`` event), equal the replies of the "on" phases (within
`RECORD_TOLERANCE`: a switch lands a few milliseconds after its tick), so
an "on" phase recorded everything and an "off" phase nothing. The drops are
reported beside the share: a share bought with drops would not be one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from measure import Level, Plan, run_level

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager
    from pathlib import Path

    from servers import Running

NAME = "paired"
TICK = 0.5  # seconds per phase
PHASES = 480  # 240 s of load; a multiple of 4, so the run ends on an "off" phase
QUICK_PHASES = 40  # --quick: 20 s, for trying the harness, not for the figure
WARMUP = 2.0  # seconds of load off, then on, before the measured run: the writer starts
SETTLE = 1.0  # seconds for the last records to reach the file
RECORD_TOLERANCE = 0.02
BOOTSTRAP = 2000
BLOCK_END = b"\n\n"


def side(phase: int) -> bool:
    """Whether recording is on in ``phase``: ABBA, off first."""
    return phase % 4 in (1, 2)


@dataclass(frozen=True, slots=True)
class Paired:
    """Replies per phase on each side, the share, and how the recording checked out."""

    off: tuple[int, ...]
    on: tuple[int, ...]
    tick: float
    low: float  # 95 % bootstrap interval of the share
    high: float
    recorded: int  # records the run added to the file
    level: Level
    dropped: int = 0  # records the daemon dropped and counted (a writer short of CPU)

    @property
    def off_rps(self) -> float:
        return sum(self.off) / (len(self.off) * self.tick) if self.off else 0.0

    @property
    def on_rps(self) -> float:
        return sum(self.on) / (len(self.on) * self.tick) if self.on else 0.0

    @property
    def share(self) -> float:
        return self.on_rps / self.off_rps if self.off_rps else 0.0


class _Switch:
    """Called at each progress tick: counts the phase that ended, switches for the next."""

    def __init__(self, pid: int, phases: int) -> None:
        self.pid = pid
        self.planned = phases
        self.on = False
        self.ticks: list[int] = []
        self.phases: list[tuple[bool, int]] = []

    def __call__(self, replies: int) -> None:
        # Ticks of the warm-up are not wanted: they come before the first
        # measured one, which `run_level` cannot tell, so the plan has none.
        if self.ticks and len(self.phases) < self.planned:
            self.phases.append((self.on, replies - self.ticks[-1]))
        self.ticks.append(replies)
        self.set(len(self.phases) < self.planned and side(len(self.phases)))

    def set(self, on: bool) -> None:
        if on != self.on:
            os.kill(self.pid, signal.SIGUSR1)
            self.on = on


def measure(
    start: Callable[[], AbstractContextManager[Running]],
    recording: Path,
    loadgen: Path,
    corpus: Path,
    connections: int,
    show: Callable[[Level], None],
    *,
    dropped: Callable[[], int],
    phases: int = PHASES,
) -> Paired:
    """Switch recording in the daemon ``start()`` serves, ``phases`` phases of one run.

    ``recording`` is the file the daemon's ``[record]`` writes (rotated
    files beside it, enough of them kept for the whole run); the daemon
    starts with recording off.
    """
    warm = Plan(connections=connections, warmup=0.0, duration=WARMUP)
    # One tick more than there are phases: the first tick opens the first phase.
    plan = Plan(connections=connections, warmup=0.0, duration=(phases + 1.5) * TICK, progress=TICK)
    with start() as live:
        switch = _Switch(live.pid, phases)
        # Answers first: once the daemon answers, its reactor runs its SIGUSR1 handler.
        run_level(loadgen, corpus, live, warm)
        switch.set(True)
        run_level(loadgen, corpus, live, warm)
        switch.set(False)
        time.sleep(SETTLE)
        before = records(recording)
        level = run_level(loadgen, corpus, replace(live, name=NAME), plan, switch)
        switch.set(False)
        time.sleep(SETTLE)
        recorded = records(recording) - before
    lost = dropped()  # read once the daemon has stopped and logged its total
    show(level)
    if len(switch.phases) < phases:
        raise RuntimeError(f"the load generator ticked {len(switch.ticks)} times, not {phases + 1}")
    on = tuple(n for was_on, n in switch.phases if was_on)
    off = tuple(n for was_on, n in switch.phases if not was_on)
    expected = sum(on)
    if abs(recorded + lost - expected) > RECORD_TOLERANCE * expected:
        raise RuntimeError(
            f"recording wrote {recorded} records and dropped {lost} while the 'on' phases "
            f"had {expected} replies"
        )
    low, high = interval(switch.phases)
    return Paired(off, on, TICK, low, high, recorded, level, lost)


def interval(phases: Sequence[tuple[bool, int]]) -> tuple[float, float]:
    """95 % bootstrap interval of the share, resampling ABBA blocks of four phases."""
    blocks = []
    for first in range(0, len(phases) - 3, 4):
        block = phases[first : first + 4]
        blocks.append((sum(n for on, n in block if on), sum(n for on, n in block if not on)))
    draw = random.Random(5)  # the same interval for the same phases
    shares = []
    for _ in range(BOOTSTRAP):
        sample = draw.choices(blocks, k=len(blocks))
        off = sum(b[1] for b in sample)
        shares.append(sum(b[0] for b in sample) / off if off else 0.0)
    shares.sort()
    return shares[int(0.025 * BOOTSTRAP)], shares[int(0.975 * BOOTSTRAP) - 1]


def dropped_in(log: Path) -> int:
    """The last ``record_dropped`` total a daemon logged (0 when it dropped nothing)."""
    total = 0
    for line in log.read_bytes().splitlines():
        if b'"record_dropped"' in line:
            total = int(json.loads(line).get("total", 0))
    return total


def records(recording: Path) -> int:
    """Blocks in the recording and its rotated files (each ends with a blank line)."""
    total = 0
    for file in recording.parent.glob(recording.name + "*"):
        if file.name.endswith((".key", ".cut")):
            continue
        try:
            total += file.read_bytes().count(BLOCK_END)  # 64 MiB at most (max_bytes)
        except FileNotFoundError:  # rotated away meanwhile
            continue
    return total


def as_json(result: Paired) -> dict[str, Any]:
    """What results.json keeps: the phases, the share and its interval, the whole run."""
    return {
        "tick_s": result.tick,
        "off_replies": list(result.off),
        "on_replies": list(result.on),
        "off_rps": result.off_rps,
        "on_rps": result.on_rps,
        "share": result.share,
        "interval_95": [result.low, result.high],
        "recorded": result.recorded,
        "dropped": result.dropped,
        "level": asdict(result.level),
    }
