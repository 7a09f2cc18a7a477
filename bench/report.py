"""Tables, the pass/fail checks of the performance targets, and the plot.

The checks restate the targets (the claims table of docs/performance.md) so
that a run says by itself
whether the figures meet it; they compare against the best postfwd figure
measured (either variant, any level), which is the harder comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from measure import Level
    from paired import Paired

POSTGATE_MIN_RPS = 15000.0
POSTGATE_MAX_P99_US = 5000.0
POSTFWD_FACTOR = 100.0
CEILING_CPU_FACTOR = 7.0
HEADLINE_CONNECTIONS = 50


@dataclass(frozen=True, slots=True)
class Check:
    claim: str
    measured: str
    passed: bool | None  # None: could not be evaluated (a server did not run)


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}" if us < 100_000 else f"{us / 1000:,.0f}"


def _rps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _answers(level: Level, checked_servers: bool) -> str:
    if level.error:
        return f"error: {level.error}"
    if not checked_servers:
        return "not checked (DUNNO to all)"
    bad = level.wrong + level.malformed
    return f"{level.checked:,} / {bad}"


def table(levels: Sequence[Level]) -> str:
    head = (
        "| server | conns | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req "
        "| cores busy | peak RSS MiB | PSS MiB | procs | loadgen CPU µs/req "
        "| other load (cores) | answers checked / wrong |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for lv in levels:
        lat, mem = lv.latency_us, lv.memory
        rows.append(
            f"| {lv.server} | {lv.connections} | {_rps(lv.rps)} | {_ms(lat['p50'])} "
            f"| {_ms(lat['p99'])} | {_ms(lat['p999'])} | {lv.cpu_us_per_request:,.1f} "
            f"| {lv.cpu_cores_busy:.2f} | {mem['hwm_kb'] / 1024:.1f} | {mem['pss_kb'] / 1024:.1f} "
            f"| {mem['processes']} | {lv.loadgen_cpu_us_per_request:.1f} "
            f"| {lv.other_cores_busy:.2f} "
            f"| {_answers(lv, lv.server != 'ceiling')} |"
        )
    return head + "\n".join(rows) + "\n"


RECORDING_MIN_SHARE = 0.9


def _at(levels: Sequence[Level], server: str, connections: int) -> Level | None:
    return next(
        (lv for lv in levels if lv.server == server and lv.connections == connections), None
    )


def checks(levels: Sequence[Level], alternating: Paired | None = None) -> list[Check]:
    postgate = _at(levels, "postgate", HEADLINE_CONNECTIONS)
    ceiling = _at(levels, "ceiling", HEADLINE_CONNECTIONS)
    postfwd = [lv for lv in levels if lv.server.startswith("postfwd")]
    best_postfwd = max(postfwd, key=lambda lv: lv.rps, default=None)
    found = [_correct_everywhere(levels)]
    if postgate is None:
        return [*found, Check("postgate measured at 50 connections", "not run", None)]
    found.append(
        Check(
            f"postgate ≥ {POSTGATE_MIN_RPS:,.0f} req/s at 50 connections",
            f"{postgate.rps:,.0f} req/s",
            postgate.rps >= POSTGATE_MIN_RPS,
        )
    )
    p99 = postgate.latency_us["p99"]
    found.append(
        Check(
            "postgate p99 ≤ 5 ms at 50 connections",
            f"{p99 / 1000:.2f} ms",
            p99 <= POSTGATE_MAX_P99_US,
        )
    )
    if best_postfwd is not None:
        factor = postgate.rps / best_postfwd.rps if best_postfwd.rps else float("inf")
        found.append(
            Check(
                "postgate ≥ 100 x postfwd's best throughput",
                f"{factor:,.0f} x ({best_postfwd.server} best {_rps(best_postfwd.rps)} req/s "
                f"at {best_postfwd.connections} conns)",
                factor >= POSTFWD_FACTOR,
            )
        )
    if ceiling is not None and ceiling.cpu_us_per_request > 0:
        ratio = postgate.cpu_us_per_request / ceiling.cpu_us_per_request
        found.append(
            Check(
                "postgate server CPU per request ≤ 7 x the ceiling's (50 connections)",
                f"{ratio:.1f} x ({postgate.cpu_us_per_request:.1f} vs "
                f"{ceiling.cpu_us_per_request:.1f} µs)",
                ratio <= CEILING_CPU_FACTOR,
            )
        )
    claim = "recording on: throughput within 10 % of recording off (50 connections)"
    if alternating is not None:
        found.append(
            Check(
                claim,
                f"{alternating.share:.1%}, 95 % interval {alternating.low:.1%}-"
                f"{alternating.high:.1%} ({_rps(alternating.on_rps)} vs "
                f"{_rps(alternating.off_rps)} req/s; one daemon switched by SIGUSR1 every "
                f"{alternating.tick:g} s, {len(alternating.on) + len(alternating.off)} "
                f"phases; {alternating.recorded:,} records written and "
                f"{alternating.dropped:,} dropped for {sum(alternating.on):,} replies while on)",
                alternating.share >= RECORDING_MIN_SHARE,
            )
        )
        return found
    recording = _at(levels, "postgate-recording", HEADLINE_CONNECTIONS)
    if recording is not None and postgate.rps:
        share = recording.rps / postgate.rps
        found.append(
            Check(
                claim,
                f"{share:.0%} ({_rps(recording.rps)} vs {_rps(postgate.rps)} req/s)",
                share >= RECORDING_MIN_SHARE,
            )
        )
    return found


def _correct_everywhere(levels: Sequence[Level]) -> Check:
    bad = [f"{lv.server}@{lv.connections}" for lv in levels if not lv.correct]
    total = sum(lv.checked for lv in levels)
    measured = f"{total:,} answers checked, wrong or failed at: {', '.join(bad) or 'none'}"
    return Check("0 wrong answers in every run", measured, not bad)


def checks_markdown(found: Sequence[Check]) -> str:
    marks = {True: "pass", False: "FAIL", None: "not evaluated"}
    lines = ["| claim | measured | result |", "|---|---|---|"]
    lines += [f"| {c.claim} | {c.measured} | {marks[c.passed]} |" for c in found]
    return "\n".join(lines) + "\n"


def machine_markdown(machine: dict[str, str]) -> str:
    return "\n".join(f"- {key.replace('_', ' ')}: {value}" for key, value in machine.items()) + "\n"


def publish(doc: Path, section: str, markdown: str) -> None:
    """Replace the text between `<!-- bench:SECTION:begin -->` and its end marker in doc."""
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    text = doc.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise RuntimeError(f"{doc} has no {begin} ... {end} section to replace")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    doc.write_text(f"{head}{begin}\n{markdown}{end}{tail}", encoding="utf-8")


def plot(levels: Sequence[Level], path: Path) -> None:
    """Throughput and p99 against connections, one line per server, log scales."""
    import matplotlib as mpl  # noqa: PLC0415 - bench-only dependency, loaded only to plot

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in dict.fromkeys(lv.server for lv in levels):
        mine = [lv for lv in levels if lv.server == server and lv.error is None]
        conns = [lv.connections for lv in mine]
        left.plot(conns, [lv.rps for lv in mine], marker="o", label=server)
        right.plot(conns, [lv.latency_us["p99"] / 1000 for lv in mine], marker="o", label=server)
    for axis, title, unit in ((left, "throughput", "requests/s"), (right, "p99 latency", "ms")):
        axis.set(xscale="log", yscale="log", xlabel="connections", ylabel=unit, title=title)
        axis.set_xticks(sorted({lv.connections for lv in levels}))
        axis.get_xaxis().set_major_formatter(mpl.ticker.ScalarFormatter())
        axis.grid(visible=True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
