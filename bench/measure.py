"""One measured level: the load generator against a running server, and the server's cost.

The load generator prints `# phase measure` when warm-up ends and
`# phase drain` when the window closes; sampling the server's CPU time at
those two lines gives CPU per request over exactly the requests counted, and
memory is read at the end of the window, under load. `# progress N` lines
(long runs) call back so that memory can be followed over time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import procstat

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from servers import Running

DRAIN_MARGIN = 120.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How long to load a server: a timed window, or a number of requests."""

    connections: int
    warmup: float
    duration: float = 10.0
    requests: int = 0
    timeout: float = 30.0
    progress: float = 0.0
    check: bool = True
    once: bool = False  # every corpus request exactly once (requests = corpus size)

    def argv(self, loadgen: Path, corpus: Path, target: str) -> list[str]:
        amount = (
            ["--requests", str(self.requests), "--max-seconds", str(self.bound())]
            if (self.requests)
            else ["--duration", str(self.duration)]
        )
        return [
            str(loadgen),
            "--target",
            target,
            "--corpus",
            str(corpus),
            "--connections",
            str(self.connections),
            "--warmup",
            str(self.warmup),
            "--timeout",
            str(self.timeout),
            "--progress",
            str(self.progress),
            *amount,
            *([] if self.check else ["--no-check"]),
            *(["--once"] if self.once else []),
        ]

    def bound(self) -> float:
        """Seconds after which the load generator stops by itself, whatever happens."""
        return 6 * 3600.0 if self.requests else self.warmup + self.duration


@dataclass(frozen=True, slots=True)
class Level:
    """What one level measured; latencies in microseconds, memory in KiB."""

    server: str
    connections: int
    requests: int
    window_s: float
    rps: float
    latency_us: dict[str, float]
    server_cpu_s: float
    cpu_us_per_request: float
    cpu_cores_busy: float
    other_cores_busy: float  # CPU used by neither the server nor the load generator
    memory: dict[str, int]
    loadgen_cpu_us_per_request: float
    replies: int
    checked: int
    wrong: int
    malformed: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def correct(self) -> bool:
        """No error, no malformed reply, and no wrong answer among those checked."""
        return self.error is None and self.wrong == 0 and self.malformed == 0


@dataclass(slots=True)
class _Samples:
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    system_start: float = 0.0
    system_end: float = 0.0
    memory: procstat.Memory | None = None
    report: dict[str, Any] = field(default_factory=dict)


def run_level(
    loadgen: Path,
    corpus: Path,
    server: Running,
    plan: Plan,
    on_progress: Callable[[int], None] | None = None,
) -> Level:
    samples = _Samples()
    argv = plan.argv(loadgen, corpus, server.endpoint.loadgen)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                _on_line(line, server.pid, samples, on_progress)
            proc.wait(timeout=plan.timeout + DRAIN_MARGIN)
        except BaseException:
            proc.kill()  # interrupted: do not wait for the run to end by itself
            raise
        stderr = proc.stderr.read() if proc.stderr else ""
    if not samples.report:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {stderr.strip()}")
    return _level(server.name, plan, samples)


def _on_line(
    line: str, pid: int, samples: _Samples, on_progress: Callable[[int], None] | None
) -> None:
    if line.startswith("# phase measure"):
        samples.cpu_start = procstat.cpu_seconds(pid)
        samples.system_start = procstat.system_busy_seconds()
    elif line.startswith("# phase drain"):
        samples.cpu_end = procstat.cpu_seconds(pid)
        samples.system_end = procstat.system_busy_seconds()
        samples.memory = procstat.memory(pid)
    elif line.startswith("# progress") and on_progress is not None:
        on_progress(int(line.split()[2]))
    elif line.startswith("{"):
        samples.report = json.loads(line)


def _level(name: str, plan: Plan, samples: _Samples) -> Level:
    report = samples.report
    requests = int(report["requests"])
    window = float(report["window_s"])
    cpu = samples.cpu_end - samples.cpu_start
    loadgen_cpu = float(report["loadgen_cpu_us_per_request"]) * requests / 1e6
    other = samples.system_end - samples.system_start - cpu - loadgen_cpu
    memory = samples.memory or procstat.Memory(0, 0, 0, 0)
    return Level(
        server=name,
        connections=plan.connections,
        requests=requests,
        window_s=window,
        rps=float(report["rps"]),
        latency_us={k: float(v) for k, v in report["latency_us"].items()},
        server_cpu_s=cpu,
        cpu_us_per_request=cpu * 1e6 / requests if requests else 0.0,
        cpu_cores_busy=cpu / window if window else 0.0,
        other_cores_busy=max(other, 0.0) / window if window else 0.0,
        memory={
            "rss_kb": memory.rss_kb,
            "hwm_kb": memory.hwm_kb,
            "pss_kb": memory.pss_kb,
            "processes": memory.processes,
        },
        loadgen_cpu_us_per_request=float(report["loadgen_cpu_us_per_request"]),
        replies=int(report["replies"]),
        checked=int(report["checked"]),
        wrong=int(report["wrong"]),
        malformed=int(report["malformed"]),
        mismatches=list(report["mismatches"]),
        error=report["error"],
    )


def fresh(directory: Path) -> Path:
    """``directory``, emptied: each server of a peer bench starts with no state."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def summary(name: str, connections: int, level: Level) -> str:
    """One level as the peer benches (limits, greylist) print it."""
    lat = level.latency_us
    return (
        f"{name:20} c={connections:3} {level.rps:8.0f} req/s"
        f"  p50 {lat['p50'] / 1000:6.2f} ms  p99 {lat['p99'] / 1000:7.2f} ms"
        f"  cpu {level.cpu_us_per_request:6.0f} us/req  checked {level.checked}"
        f"  wrong {level.wrong}  rss {level.memory['rss_kb'] // 1024} MiB"
    )
