"""Evaluate request files through the daemon's engine: replay, verdicts, diff.

Owns the verdict (`check`) that ``postgate replay``, ``postgate test`` and the
pytest plugin share, so the three cannot disagree. `evaluate` answers through
the daemon's own answer step (`postgate.answer.decide`): the same rules, the
same rendering, the same ``daemon.on_error`` fallback. It imports no Twisted,
opens no socket and never reads the wall clock: a case's time comes from its
``# time:`` line, else from the caller (``--time``), else it is None, and
the answer step is given 0. Stateful rules decide on that clock, with
their state in memory for the run (`Engine.facts`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from postgate.answer import Local, failed, settle
from postgate.config.load import load_config
from postgate.config.problems import ConfigError, report_lines
from postgate.record.blocks import format_time
from postgate.rules import Needs
from postgate.state import local_providers
from postgate.wire.policy_files import CorpusError, parse_policy_text, read_policy_file

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from postgate.config.load import Config
    from postgate.wire.policy_files import Case

EX_DATAERR: Final = 65
EX_NOINPUT: Final = 66
EX_CONFIG: Final = 78


class LoadError(Exception):
    """A configuration or request file that cannot be used.

    The message is complete (every problem, one per line) and ``status`` is
    the sysexits code the command line returns for it.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Engine:
    """A loaded configuration, and where it came from, to answer cases with."""

    config: Config
    source: str = ""
    warnings: tuple[str, ...] = ()
    # Stateful rules keep their state here from one case to the next, on the
    # cases' own clock: the 101st message of the hour is deferred in replay too.
    facts: Local = field(default_factory=lambda: Local({}))


def load_engine(path: Path) -> Engine:
    """Load ``path`` as the daemon would, or raise `LoadError` listing every problem."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        lines = report_lines(path, exc.errors, exc.warnings)
        raise LoadError("\n".join(lines), EX_CONFIG) from None
    warnings = tuple(report_lines(path, (), config.warnings))
    return Engine(config, str(path), warnings, Local(local_providers(config)))


def fresh_state(engine: Engine) -> Engine:
    """The same configuration with empty state: each test file starts from nothing."""
    return replace(engine, facts=Local(local_providers(engine.config)))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One case's answer: what Postfix would receive, and which rule gave it."""

    case: Case
    answer: str  # the text after ``action=``, templates rendered: what was decided
    action: str  # the rule's action as configured (`Action.line`)
    rule: str
    now: float | None
    trace: tuple[str, ...] = ()
    wire: bytes = b""  # the bytes the daemon sends (DUNNO's under dry_run)
    # Rules in mode = "observe" that would have decided: (rule id, answer), not sent.
    observed: tuple[tuple[str, str], ...] = ()


def evaluate(
    engine: Engine, case: Case, *, trace: bool = False, now: float | None = None
) -> Outcome:
    """Answer one case through the daemon's answer step; its ``# time:`` wins over ``now``."""
    when = case.time if case.time is not None else now
    at = 0.0 if when is None else when
    answer = settle(engine.config, case.request, at, engine.facts, trace=trace)
    if isinstance(answer, Needs):  # a provider that cannot answer without I/O: a bug
        answer = failed(engine.config, case.request, at, LookupError(sorted(answer.facts)))
    observed = tuple(
        (d.rule, d.action.sent or d.action.render(case.request, d.rule, d.values))
        for d in answer.observed
    )
    return Outcome(
        case,
        answer.text,
        answer.action.line,
        answer.rule,
        when,
        answer.trace,
        answer.wire,
        observed,
    )


def replay(
    engine: Engine, cases: Iterable[Case], *, trace: bool = False, now: float | None = None
) -> list[Outcome]:
    return [evaluate(engine, case, trace=trace, now=now) for case in cases]


def has_expectation(case: Case) -> bool:
    return case.expect is not None or case.expect_rule is not None


def check(outcome: Outcome) -> tuple[str, ...]:
    """Every expectation of the case that does not hold; empty means it passes."""
    case = outcome.case
    wrong = []
    if case.expect is not None and case.expect.strip() != outcome.answer:
        wrong.append("answer")
    if case.expect_rule is not None and case.expect_rule.strip() != outcome.rule:
        wrong.append("rule")
    return tuple(wrong)


def where(case: Case) -> str:
    """``file:line``, plus the ``# name:`` when the file gave one."""
    place = f"{case.source}:{case.line}"
    return place if case.name in {"", place} else f"{place} ({case.name})"


def describe_outcome(outcome: Outcome) -> str:
    watched = "".join(f"  (observed {rule}: {text})" for rule, text in outcome.observed)
    return f"{where(outcome.case)}: {outcome.answer}  [{outcome.rule}]{watched}"


def describe_failure(outcome: Outcome) -> str:
    """The readable diff of a failed case: expected vs actual, request, trace."""
    case = outcome.case
    wrong = check(outcome)
    lines = [f"{where(case)}: expectation failed ({' and '.join(wrong)})"]
    if case.expect is not None:
        lines += [
            f"  expected answer: {case.expect.strip()}",
            f"  actual answer:   {outcome.answer}",
        ]
    if case.expect_rule is not None:
        lines += [f"  expected rule:   {case.expect_rule.strip()}"]
    lines.append(f"  actual rule:     {outcome.rule}")
    if outcome.now is not None:
        lines.append(f"  time:            {format_time(outcome.now)}")
    lines.append("  request:")
    lines += [f"    {name}={value}" for name, value in case.request.items()]
    lines.append("  trace:" if outcome.trace else "  trace: (none recorded)")
    lines += [f"    {step}" for step in outcome.trace]
    return "\n".join(lines)


def summarize(outcomes: Sequence[Outcome]) -> list[str]:
    """Answers per rule, most used first: what a replay did to the traffic."""
    counts = collections.Counter(o.rule for o in outcomes)
    actions: dict[str, set[str]] = collections.defaultdict(set)
    for outcome in outcomes:
        actions[outcome.rule].add(outcome.action)
    width = max((len(rule) for rule in counts), default=4)
    lines = [f"answers per rule ({len(outcomes)} requests):"]
    for rule, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {rule:<{width}} {count:>7}  {' | '.join(sorted(actions[rule]))}")
    return lines + _observed_summary(outcomes)


def _observed_summary(outcomes: Sequence[Outcome]) -> list[str]:
    """Rules in observe mode, apart: what they would have answered, which was not sent."""
    counts = collections.Counter(rule for o in outcomes for rule, _ in o.observed)
    if not counts:
        return []
    width = max(len(rule) for rule in counts)
    lines = ['observed, not answered (mode = "observe"):']
    for rule, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {rule:<{width}} {count:>7}")
    return lines


@dataclass(frozen=True, slots=True)
class Change:
    """One request answered differently by the old and the new ruleset."""

    old: Outcome
    new: Outcome


@dataclass(frozen=True, slots=True)
class DiffReport:
    """Changed answers grouped by (old rule, new rule), biggest group first."""

    total: int
    groups: tuple[tuple[tuple[str, str], tuple[Change, ...]], ...]
    same_answer_other_rule: int = 0
    # Per rule in observe mode (in either config): requests it would have decided, old and new.
    observed: tuple[tuple[str, int, int], ...] = ()
    changed: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "changed", sum(len(changes) for _, changes in self.groups))


def diff(
    old: Engine, new: Engine, cases: Iterable[Case], *, now: float | None = None
) -> DiffReport:
    """Replay ``cases`` through both engines; keep the requests whose answer changes."""
    grouped: dict[tuple[str, str], list[Change]] = collections.defaultdict(list)
    watched: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    total = moved = 0
    for case in cases:
        total += 1
        before, after = evaluate(old, case, now=now), evaluate(new, case, now=now)
        for side, outcome in enumerate((before, after)):
            for rule, _ in outcome.observed:
                watched[rule][side] += 1
        if before.answer != after.answer:
            grouped[before.rule, after.rule].append(Change(before, after))
        elif before.rule != after.rule:
            moved += 1
    groups = sorted(grouped.items(), key=lambda item: (-len(item[1]), item[0]))
    observed = tuple((rule, a, b) for rule, (a, b) in sorted(watched.items()))
    return DiffReport(
        total, tuple((key, tuple(changes)) for key, changes in groups), moved, observed
    )


def describe_diff(report: DiffReport, examples: int = 3) -> list[str]:
    """The report a person reads; ``examples=0`` lists every changed request."""
    lines = [f"{report.changed} of {report.total} requests change their answer"]
    for (old_rule, new_rule), changes in report.groups:
        lines.append(f"\n{old_rule} -> {new_rule}: {len(changes)} request(s)")
        pairs = collections.Counter((c.old.answer, c.new.answer) for c in changes)
        for (before, after), count in pairs.most_common():
            lines.append(f"  {count:>7} x  {before}  ->  {after}")
        shown = changes if examples <= 0 else changes[:examples]
        lines += [f"    {where(c.old.case)}" for c in shown]
        if len(shown) < len(changes):
            lines.append(f"    ... and {len(changes) - len(shown)} more")
    if report.same_answer_other_rule:
        lines.append(
            f"\n{report.same_answer_other_rule} request(s) keep their answer "
            "but are now decided by another rule"
        )
    if report.observed:
        lines.append('\nobserved, not answered (mode = "observe"): requests, old -> new')
        lines += [f"  {rule}: {a} -> {b}" for rule, a, b in report.observed]
    return lines


def load_cases(path: Path) -> list[Case]:
    """`corpus.read_policy_file`, its errors as a `LoadError` with the exit status."""
    try:
        return read_policy_file(path)
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}", EX_NOINPUT) from None
    except CorpusError as exc:
        raise LoadError(str(exc), EX_DATAERR) from None


def load_text(text: str, source: str) -> list[Case]:
    """`corpus.parse_policy_text` for piped input, malformed text as a `LoadError`."""
    try:
        return parse_policy_text(text, source)
    except CorpusError as exc:
        raise LoadError(str(exc), EX_DATAERR) from None


def config_header(path: Path) -> Path | None:
    """The ``# config: PATH`` comment among the file's leading comments, if any."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.strip()
                if line and not line.startswith("#"):
                    return None
                name, _, value = line.lstrip("#").partition(":")
                if name.strip() == "config" and value.strip():
                    return path.parent / value.strip()
    except OSError:
        return None
    return None


def policy_files(paths: Iterable[Path]) -> list[Path]:
    """Files named ``test_*.policy`` under ``paths``; a file named directly is kept."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("test_*.policy") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise LoadError(f"{path}: no such file or directory", EX_NOINPUT)
    return found


__all__ = [
    "Change",
    "DiffReport",
    "Engine",
    "LoadError",
    "Outcome",
    "check",
    "diff",
    "evaluate",
    "fresh_state",
    "load_engine",
    "replay",
    "summarize",
]
