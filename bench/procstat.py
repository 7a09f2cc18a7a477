"""CPU time and memory of a server's whole process tree, read from /proc.

postfwd2 answers from pre-forked children and keeps a cache process, so a
figure taken from the top process alone would flatter it; every figure here
covers the root process and all its descendants. CPU time counts
utime+stime of each living process plus cutime+cstime (children it has
reaped), so a child that exits between two samples is still accounted for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
TICKS_PER_SECOND: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Memory:
    """Kilobytes summed over the tree; hwm is each process's own peak."""

    rss_kb: int
    hwm_kb: int
    pss_kb: int
    processes: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None  # the process exited between listing and reading
    # The command name is in parentheses and may contain spaces: split after it.
    return text[text.rindex(")") + 2 :].split()


def state(pid: int) -> str | None:
    """The one-letter process state (R, S, Z...), None when the process is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def tree(root: int) -> list[int]:
    """The root and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def cpu_seconds(root: int) -> float:
    """CPU seconds used so far by the tree under root (user + system)."""
    ticks = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime, cutime, cstime are fields 14-17 of stat(5); index 11-14 here.
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / TICKS_PER_SECOND


def system_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait)."""
    fields = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / TICKS_PER_SECOND


def _status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    found = dict.fromkeys(keys, 0)
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0])
    return found


def _pss_kb(pid: int) -> int:
    try:
        lines = (PROC / str(pid) / "smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith("Pss:")), 0)


def memory(root: int) -> Memory:
    pids = tree(root)
    rss = hwm = pss = 0
    for pid in pids:
        status = _status_kb(pid, ("VmRSS", "VmHWM"))
        rss += status["VmRSS"]
        hwm += status["VmHWM"]
        pss += _pss_kb(pid)
    return Memory(rss_kb=rss, hwm_kb=hwm, pss_kb=pss, processes=len(pids))
