"""The rule-testing commands: ``postgate replay``, ``postgate diff``, ``postgate test``.

Each ``*_main(argv, out, err)`` parses its own arguments and returns the exit
status, so `postgate.commands.cli` only forwards the rest of the command line and
tests call them with string buffers. Evaluation lives in `postgate.commands.replay`;
this module only reads files, prints and chooses exit statuses:

* 0: every request answered and every expectation held (diff: nothing changed);
* 1: an expectation failed (diff: some answer changed);
* 2: usage; 5: ``test`` found no expectation to check;
* 65: a malformed request file; 66: a missing file; 78: a refused configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from postgate.commands.replay import (
    EX_CONFIG,
    EX_DATAERR,
    Engine,
    LoadError,
    Outcome,
    check,
    config_header,
    describe_diff,
    describe_failure,
    describe_outcome,
    diff,
    evaluate,
    fresh_state,
    has_expectation,
    load_cases,
    load_engine,
    load_text,
    policy_files,
    state_summary,
    summarize,
)
from postgate.config.load import DEFAULT_PATH
from postgate.wire.policy_files import parse_time

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from postgate.wire.policy_files import Case

EX_USAGE: Final = 2
NO_TESTS: Final = 5  # what pytest returns when it collected nothing


class _UsageError(Exception):
    """argparse wanted to exit; carries its status (0 for --help)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str], out: TextIO, err: TextIO
) -> argparse.Namespace:
    """Parse with argparse's messages sent to ``out``/``err`` instead of sys.*."""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return parser.parse_args(list(argv))
        except SystemExit as exc:
            raise _UsageError(exc.code if isinstance(exc.code, int) else EX_USAGE) from None


def config_option(parser: argparse.ArgumentParser, what: str = "configuration file") -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_PATH,
        metavar="CONFIG",
        help=f"{what} (default: {DEFAULT_PATH})",
    )


def _time_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time",
        metavar="T",
        help="replay clock (unix seconds or ISO-8601, UTC when no zone) for requests "
        "without a '# time:' line; the wall clock is never used",
    )


def _clock(args: argparse.Namespace) -> float | None:
    if args.time is None:
        return None
    try:
        return parse_time(args.time)
    except ValueError as exc:
        raise LoadError(f"--time: {exc}", EX_USAGE) from None


def _read_all(names: Sequence[str], stdin: TextIO | None) -> list[Case]:
    cases: list[Case] = []
    for name in names:
        if name == "-":
            cases += load_text((stdin or sys.stdin).read(), "<stdin>")
        else:
            cases += load_cases(Path(name))
    return cases


def _engine(path: Path, err: TextIO) -> Engine:
    engine = load_engine(path)
    for warning in engine.warnings:
        print(warning, file=err)
    return engine


def _guarded(err: TextIO, body: Callable[[], int]) -> int:
    """Run a command body, turning usage and load errors into exit statuses."""
    try:
        return body()
    except _UsageError as exc:
        return exc.status
    except LoadError as exc:
        print(exc, file=err)
        return exc.status


# --- replay -------------------------------------------------------------------


def _replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate replay",
        description="Answer each request of the files with the configured rules, as the "
        "daemon would, and check '# expect:' / '# expect-rule:' lines.",
        epilog="Exit status: 0 all expectations hold, 1 one failed, 65 malformed file, "
        "66 missing file, 78 configuration refused.",
    )
    config_option(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="print the rules tried")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="OTHER",
        help="instead of answering, show what OTHER would answer differently (like diff)",
    )
    _time_option(parser)
    parser.add_argument("files", nargs="+", metavar="FILE", help="request file, or - for stdin")
    return parser


def replay_main(argv: Sequence[str], out: TextIO, err: TextIO, stdin: TextIO | None = None) -> int:
    return _guarded(err, lambda: _replay(argv, out, err, stdin))


def _replay(argv: Sequence[str], out: TextIO, err: TextIO, stdin: TextIO | None) -> int:
    args = _parse(_replay_parser(), argv, out, err)
    engine = _engine(args.config, err)
    if args.against is not None:
        return _diff_report(engine, _engine(args.against, err), args, out, stdin)
    cases = _read_all(args.files, stdin)
    now = _clock(args)
    # A stateful ruleset is traced at once: evaluating a case again would
    # count it twice.
    traced = args.verbose or engine.config.ruleset.needs_facts
    outcomes = [evaluate(engine, case, trace=traced, now=now) for case in cases]
    for outcome in outcomes:
        print(describe_outcome(outcome), file=out)
        for step in outcome.trace if args.verbose else ():
            print(f"    {step}", file=out)
    print("", *summarize(outcomes), *state_summary(engine), sep="\n", file=out)
    return _verdicts(engine, outcomes, out)


def _verdicts(engine: Engine, outcomes: Sequence[Outcome], out: TextIO) -> int:
    checked = [o for o in outcomes if has_expectation(o.case)]
    failed = [o for o in checked if check(o)]
    for outcome in failed:
        traced = (
            outcome
            if outcome.trace
            else evaluate(engine, outcome.case, trace=True, now=outcome.now)
        )
        print("", describe_failure(traced), sep="\n", file=out)
    if not checked:
        return 0
    print(f"\nexpectations: {len(checked) - len(failed)} held, {len(failed)} failed", file=out)
    return 1 if failed else 0


# --- diff ---------------------------------------------------------------------


def _diff_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate diff",
        description="Replay the requests through two configurations and list every "
        "request whose answer changes, grouped by (old rule -> new rule).",
        epilog="Exit status: 0 no answer changes, 1 some answers change, "
        "65/66 bad or missing request file, 78 a configuration is refused.",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        required=True,
        metavar="CONFIG",
        help="give twice: -c OLD -c NEW",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=3,
        metavar="N",
        help="example requests shown per group (default 3; 0 lists every request)",
    )
    _time_option(parser)
    parser.add_argument("files", nargs="+", metavar="FILE", help="request file, or - for stdin")
    return parser


def diff_main(argv: Sequence[str], out: TextIO, err: TextIO, stdin: TextIO | None = None) -> int:
    return _guarded(err, lambda: _diff(argv, out, err, stdin))


def _diff(argv: Sequence[str], out: TextIO, err: TextIO, stdin: TextIO | None) -> int:
    parser = _diff_parser()
    args = _parse(parser, argv, out, err)
    if len(args.config) != 2:
        with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            parser.error("give exactly two configurations: -c OLD -c NEW")
        return EX_USAGE
    old, new = (_engine(path, err) for path in args.config)
    return _diff_report(old, new, args, out, stdin)


def _diff_report(
    old: Engine, new: Engine, args: argparse.Namespace, out: TextIO, stdin: TextIO | None
) -> int:
    cases = _read_all(args.files, stdin)
    report = diff(old, new, cases, now=_clock(args))
    print(f"old: {old.source}\nnew: {new.source}", file=out)
    print(*describe_diff(report, getattr(args, "examples", 3)), sep="\n", file=out)
    return 1 if report.changed else 0


# --- test ---------------------------------------------------------------------


def _test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate test",
        description="Run the expectations of every test_*.policy file under PATH "
        "(default: the configuration's directory). A file's own '# config: PATH' "
        "line wins over -c.",
        epilog="Exit status: 0 all passed, 1 a test failed, 5 no tests found, "
        "65/66 bad or missing file, 78 a configuration is refused.",
    )
    config_option(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    _time_option(parser)
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    return parser


def test_main(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    return _guarded(err, lambda: _test(argv, out, err))


@dataclass(slots=True)
class _Tally:
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    engines: dict[Path, Engine] = field(default_factory=dict)

    def error(self, status: int, message: str, err: TextIO) -> None:
        print(f"ERROR {message}", file=err)
        self.errors[status] = self.errors.get(status, 0) + 1

    def status(self) -> int:
        for status in (EX_CONFIG, EX_DATAERR):
            if status in self.errors:
                return status
        if self.errors:
            return min(self.errors)
        if self.failures:
            return 1
        return 0 if self.passed else NO_TESTS


def _test(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = _parse(_test_parser(), argv, out, err)
    files = policy_files(args.paths or [args.config.parent])
    tally = _Tally()
    now = _clock(args)
    for path in files:
        _test_file(path, args, tally, now, (out, err))
    if tally.failures:
        print("\n=== FAILURES ===", file=out)
        print(*tally.failures, sep="\n\n", file=out)
    summary = f"{tally.passed} passed, {len(tally.failures)} failed"
    if tally.errors:
        summary += f", {sum(tally.errors.values())} error(s)"
    print(f"\n{summary}", file=out)
    return tally.status()


def _test_file(
    path: Path,
    args: argparse.Namespace,
    tally: _Tally,
    now: float | None,
    streams: tuple[TextIO, TextIO],
) -> None:
    out, err = streams
    config = config_header(path) or args.config
    try:
        if config not in tally.engines:
            tally.engines[config] = _engine(config, err)
        engine = fresh_state(tally.engines[config])
        cases = [case for case in load_cases(path) if has_expectation(case)]
    except LoadError as exc:
        tally.error(exc.status, f"{path}:\n{exc}", err)
        return
    marks = []
    for case in cases:
        outcome = evaluate(engine, case, trace=True, now=now)
        failed = bool(check(outcome))
        marks.append("F" if failed else ".")
        if failed:
            tally.failures.append(describe_failure(outcome))
        else:
            tally.passed += 1
        if args.verbose:
            print(f"{'FAILED' if failed else 'PASSED'} {describe_outcome(outcome)}", file=out)
    if not args.verbose:
        print(f"{path} {''.join(marks)}", file=out)
