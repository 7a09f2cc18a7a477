"""A description of the machine a benchmark ran on, to print next to its figures.

Throughput figures mean nothing without the machine: the load generator and
the server share its cores, so the core count and model belong with every
table. The load average at the start shows whether something else was busy.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _command(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return (done.stdout or done.stderr).strip()


def _python(python: Path) -> str:
    """Version and binary: two builds of one version can differ by a third in speed."""
    code = "import sys, os; print(sys.version.split()[0], os.path.realpath(sys.executable))"
    return _command([str(python), "-c", code]) or "not found"


def _lscpu() -> dict[str, str]:
    fields = {}
    for line in _command(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _os_name() -> str:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return platform.system()
    found = (line.split("=", 1)[1].strip('"') for line in lines if line.startswith("PRETTY_NAME="))
    return next(found, platform.system())


def _mem_total_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def describe(python: Path, venv_python: Path) -> dict[str, str]:
    """The machine, with the interpreter of ``postgate`` and of ``postgate-venv``."""
    cpu = _lscpu()
    return {
        "cpu": cpu.get("Model name", platform.processor()),
        "cpus": cpu.get("CPU(s)", str(os.cpu_count())),
        "hypervisor": cpu.get("Hypervisor vendor", "none"),
        "memory_mib": str(_mem_total_mib()),
        "os": _os_name(),
        "kernel": platform.release(),
        "python (postgate)": _python(python),
        "python (postgate-venv)": _python(venv_python),
        "gcc": _first_line(_command(["gcc", "--version"])),
        "postfwd": _first_line(_command(["/usr/sbin/postfwd1", "-V"])),
        "loadavg_at_start": loadavg(),
    }
