"""Replay, verdicts, summary, diff and the replay/diff/test commands."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import io
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from postgate.commands import rule_tests as admin
from postgate.commands.replay import (
    Engine,
    LoadError,
    check,
    describe_diff,
    describe_failure,
    diff,
    evaluate,
    load_cases,
    load_engine,
    replay,
    summarize,
)
from postgate.config.load import Config, DaemonConfig
from postgate.replies.model import DUNNO
from postgate.replies.parsing import parse_action
from postgate.rules import Ruleset
from postgate.wire.policy_files import Case, parse_policy_text
from tests.unit.support.replays import BAD, GOOD, RULES, block

if TYPE_CHECKING:
    from collections.abc import Sequence

    from postgate.replies.model import Action
    from postgate.rules import Decision
    from postgate.wire.codec import PolicyRequest

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"


WITHOUT_TRAP = RULES.replace(
    '[[rules]]\nid = "TRAP"\nrecipient = "trap@example.com"\n'
    'action = "550 5.7.1 Recipient address rejected: trap {recipient}"\n\n',
    "",
)


def write_config(tmp_path: Path, text: str = RULES, name: str = "postgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return load_engine(write_config(tmp_path))


def one_case(text: str) -> Case:
    (case,) = parse_policy_text(text, "t.policy")
    return case


def run(main: object, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if main is admin.test_main:
        status = admin.test_main(list(argv), out, err)
    else:
        status = main(list(argv), out, err, io.StringIO(stdin))  # type: ignore[operator]
    return status, out.getvalue(), err.getvalue()


class FailingRuleset(Ruleset):
    """A ruleset with a bug: every decision raises."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "program", self._bug)

    def _bug(self, raw: dict[str, str]) -> Decision:
        raise RuntimeError(f"bug on {raw.get('recipient')}")

    def decide(self, request: PolicyRequest, *, trace: bool = False) -> Decision:
        return self._bug(request.raw)


def failing_engine(on_error: Action = DUNNO) -> Engine:
    return Engine(Config(Path("t.toml"), DaemonConfig(on_error=on_error), FailingRuleset()))


class TestEvaluate:
    def test_first_matching_rule_answers(self, engine: Engine) -> None:
        """A request outside our domains from a stranger is answered by RELAY."""
        outcome = evaluate(engine, one_case(block("x@example.org")))
        assert ("554 5.7.1 Relay access denied", "RELAY") == (outcome.answer, outcome.rule)

    def test_answer_is_the_rendered_template(self, engine: Engine) -> None:
        """The answer is what Postfix receives; the action keeps the template."""
        outcome = evaluate(engine, one_case(block("trap@example.com")))
        expected = (
            "550 5.7.1 Recipient address rejected: trap trap@example.com",
            "550 5.7.1 Recipient address rejected: trap {recipient}",
        )
        assert expected == (outcome.answer, outcome.action)

    def test_case_time_wins_over_the_given_clock(self, engine: Engine) -> None:
        """A block's own '# time:' is its clock, whatever --time says."""
        case = one_case(block("a@example.com", "198.51.100.1", "time: 2026-03-01T12:00:00Z"))
        assert 1772366400.0 == evaluate(engine, case, now=5.0).now

    def test_given_clock_applies_without_a_case_time(self, engine: Engine) -> None:
        """Without '# time:' the caller's clock is used, and nothing else."""
        case = one_case(block("a@example.com"))
        assert (5.0, None) == (evaluate(engine, case, now=5.0).now, evaluate(engine, case).now)

    def test_trace_only_when_asked(self, engine: Engine) -> None:
        """The rules tried are listed with trace=True and absent otherwise."""
        case = one_case(block("a@example.com"))
        traced = evaluate(engine, case, trace=True).trace
        assert ((), "OURS: matched -> DUNNO") == (evaluate(engine, case).trace, traced[-1])

    def test_failing_evaluation_answers_like_the_daemon(self) -> None:
        """A raising ruleset gives daemon.on_error under the ON_ERROR rule id."""
        on_error = parse_action("451 4.3.0 Try again later").action
        outcome = evaluate(failing_engine(on_error), one_case(block("a@example.com")))
        expected = ("451 4.3.0 Try again later", "ON_ERROR")
        assert expected == (outcome.answer, outcome.rule)
        assert "RuntimeError" in outcome.trace[0]


class TestCheck:
    def test_holding_expectations_give_no_complaint(self, engine: Engine) -> None:
        """Every expectation of GOOD holds."""
        outcomes = replay(engine, parse_policy_text(GOOD, "good.policy"))
        assert [(), (), (), (), ()] == [check(o) for o in outcomes]

    def test_wrong_answer_and_rule_are_both_reported(self, engine: Engine) -> None:
        """An expectation of DUNNO/OURS for a relay attempt fails on both counts."""
        assert ("answer", "rule") == check(evaluate(engine, one_case(BAD)))

    def test_expect_may_be_written_with_action_prefix(self, engine: Engine) -> None:
        """'# expect: action=DUNNO' is the same expectation as '# expect: DUNNO'."""
        case = one_case(block("a@example.com", "198.51.100.1", "expect: action=DUNNO"))
        assert () == check(evaluate(engine, case))

    def test_failure_report_shows_request_expected_actual_and_trace(self, engine: Engine) -> None:
        """The readable diff names the place and shows both answers, the request and the trace."""
        report = describe_failure(evaluate(engine, one_case(BAD), trace=True))
        for needle in (
            "t.policy:1 (wrong): expectation failed (answer and rule)",
            "  expected answer: DUNNO",
            "  actual answer:   554 5.7.1 Relay access denied",
            "  expected rule:   OURS",
            "  actual rule:     RELAY",
            "    recipient=x@example.org",
            "    RELAY: matched -> 554 5.7.1 Relay access denied",
        ):
            assert needle in report.splitlines()


class TestSummary:
    def test_answers_are_counted_per_rule_most_used_first(self, engine: Engine) -> None:
        """Two OURS, one each of the others; templates are shown unrendered."""
        outcomes = replay(engine, parse_policy_text(GOOD, "good.policy"))
        expected = [
            "answers per rule (5 requests):",
            "  OURS          2  DUNNO",
            "  BLOCKED       1  554 5.7.1 Client host rejected: blocked",
            "  RELAY         1  554 5.7.1 Relay access denied",
            "  TRAP          1  550 5.7.1 Recipient address rejected: trap {recipient}",
        ]
        assert expected == summarize(outcomes)


class TestDiff:
    def test_same_rules_change_nothing(self, engine: Engine) -> None:
        """A ruleset compared with itself changes no answer."""
        report = diff(engine, engine, parse_policy_text(GOOD, "good.policy"))
        assert (5, 0, ()) == (report.total, report.changed, report.groups)

    def test_removed_rule_changes_exactly_its_requests(self, tmp_path: Path) -> None:
        """Without TRAP, the trap requests (and only they) go to OURS."""
        old = load_engine(write_config(tmp_path))
        new = load_engine(write_config(tmp_path, WITHOUT_TRAP, "new.toml"))
        text = GOOD + block("trap@example.com", "198.51.100.8")
        report = diff(old, new, parse_policy_text(text, "d.policy"))
        ((key, changes),) = report.groups
        assert (("TRAP", "OURS"), [17, 37]) == (key, [c.old.case.line for c in changes])

    def test_same_answer_from_another_rule_is_counted_apart(self, tmp_path: Path) -> None:
        """A renamed rule keeps the answer: no change, but counted as moved."""
        old = load_engine(write_config(tmp_path))
        new = load_engine(write_config(tmp_path, RULES.replace('"RELAY"', '"OTHER"'), "n.toml"))
        report = diff(old, new, parse_policy_text(GOOD, "good.policy"))
        assert (0, 1) == (report.changed, report.same_answer_other_rule)

    def test_report_groups_with_counts_and_limits_examples(self, tmp_path: Path) -> None:
        """Three changes in one group, one example shown, the rest counted."""
        old = load_engine(write_config(tmp_path))
        new = load_engine(write_config(tmp_path, WITHOUT_TRAP, "new.toml"))
        text = block("trap@example.com") * 3
        lines = describe_diff(diff(old, new, parse_policy_text(text, "d.policy")), examples=1)
        expected = [
            "3 of 3 requests change their answer",
            "\nTRAP -> OURS: 3 request(s)",
            "        3 x  550 5.7.1 Recipient address rejected: trap trap@example.com  ->  DUNNO",
            "    d.policy:1",
            "    ... and 2 more",
        ]
        assert expected == lines


class TestReadingFiles:
    def test_missing_file_is_a_load_error(self, tmp_path: Path) -> None:
        """An absent request file is reported with EX_NOINPUT."""
        with pytest.raises(LoadError) as caught:
            load_cases(tmp_path / "nope.policy")
        assert 66 == caught.value.status

    def test_malformed_file_is_a_load_error_naming_the_line(self, tmp_path: Path) -> None:
        """A file the corpus reader refuses is reported with EX_DATAERR and file:line."""
        path = tmp_path / "bad.policy"
        path.write_text("request=x\nnot an attribute\n")
        with pytest.raises(LoadError) as caught:
            load_cases(path)
        assert (65, f"{path}:2:") == (caught.value.status, str(caught.value)[: len(str(path)) + 3])


class TestReplayCommand:
    def test_all_expectations_hold_exit_zero(self, tmp_path: Path) -> None:
        """Per-request lines, the summary and the tally; exit 0."""
        config = write_config(tmp_path)
        (tmp_path / "good.policy").write_text(GOOD)
        status, out, _ = run(admin.replay_main, "-c", str(config), str(tmp_path / "good.policy"))
        assert 0 == status
        assert f"{tmp_path / 'good.policy'}:1 (ours): DUNNO  [OURS]" in out.splitlines()
        assert "answers per rule (5 requests):" in out
        assert out.endswith("expectations: 4 held, 0 failed\n")

    def test_failed_expectation_exits_one_with_a_diff(self, tmp_path: Path) -> None:
        """One wrong expectation: exit 1, its diff and trace printed."""
        config = write_config(tmp_path)
        (tmp_path / "bad.policy").write_text(GOOD + BAD)
        status, out, _ = run(admin.replay_main, "-c", str(config), str(tmp_path / "bad.policy"))
        assert 1 == status
        assert "  expected answer: DUNNO" in out
        assert "    RELAY: matched -> 554 5.7.1 Relay access denied" in out
        assert out.endswith("expectations: 4 held, 1 failed\n")

    def test_standard_input_is_read_for_dash(self, tmp_path: Path) -> None:
        """'-' reads the requests from standard input."""
        config = write_config(tmp_path)
        status, out, _ = run(admin.replay_main, "-c", str(config), "-", stdin=GOOD)
        assert (0, "<stdin>:1 (ours): DUNNO  [OURS]") == (status, out.splitlines()[0])

    def test_verbose_prints_the_trace(self, tmp_path: Path) -> None:
        """-v lists the rules tried under each request."""
        config = write_config(tmp_path)
        _, out, _ = run(admin.replay_main, "-c", str(config), "-v", "-", stdin=block("a@x.org"))
        assert '    BLOCKED: failed: client_address = "192.0.2.66"' in out.splitlines()

    def test_refused_configuration_exits_78_with_every_problem(self, tmp_path: Path) -> None:
        """A broken config is listed problem by problem and nothing is replayed."""
        config = write_config(tmp_path, RULES + '\n[[rules]]\nid = "X"\nbogus = 1\n')
        status, out, err = run(admin.replay_main, "-c", str(config), "-", stdin=GOOD)
        assert (78, "") == (status, out)
        assert "rules[4]" in err
        assert "configuration refused" in err

    def test_malformed_request_file_exits_65(self, tmp_path: Path) -> None:
        """A line that is not name=value names its file and line."""
        config = write_config(tmp_path)
        status, _, err = run(admin.replay_main, "-c", str(config), "-", stdin="oops\n")
        assert (65, True) == (status, "<stdin>:1" in err)

    def test_unreadable_time_is_a_usage_error(self, tmp_path: Path) -> None:
        """--time must be unix seconds or ISO-8601."""
        config = write_config(tmp_path)
        status, _, err = run(admin.replay_main, "-c", str(config), "--time", "noon", "-")
        assert (2, True) == (status, "--time" in err)

    def test_against_reports_like_diff(self, tmp_path: Path) -> None:
        """replay --against OTHER is diff with -c as the old configuration."""
        old = write_config(tmp_path)
        new = write_config(tmp_path, WITHOUT_TRAP, "new.toml")
        argv = ("-c", str(old), "--against", str(new), "-")
        status, out, _ = run(admin.replay_main, *argv, stdin=GOOD)
        assert (1, True) == (status, "TRAP -> OURS: 1 request(s)" in out)


class TestDiffCommand:
    def test_no_change_exits_zero(self, tmp_path: Path) -> None:
        """Comparing a config with itself: nothing changes, exit 0."""
        config = str(write_config(tmp_path))
        status, out, _ = run(admin.diff_main, "-c", config, "-c", config, "-", stdin=GOOD)
        assert (0, True) == (status, "0 of 5 requests change their answer" in out)

    def test_one_configuration_is_a_usage_error(self, tmp_path: Path) -> None:
        """diff needs -c OLD -c NEW."""
        config = str(write_config(tmp_path))
        status, _, err = run(admin.diff_main, "-c", config, "-", stdin=GOOD)
        assert (2, True) == (status, "exactly two" in err)

    def test_reference_against_variant_lists_exactly_the_spamtrap_requests(self) -> None:
        """The variant drops SPAMTRAP: the changed requests are those SPAMTRAP decided."""
        reference, variant = EXAMPLES / "reference.toml", EXAMPLES / "rules-variant.toml"
        corpus = EXAMPLES / "test_reference.policy"
        cases = load_cases(corpus)
        outcomes = replay(load_engine(reference), cases)
        trapped = [o.case.line for o in outcomes if o.rule == "SPAMTRAP"]
        report = diff(load_engine(reference), load_engine(variant), cases)
        changed = sorted(c.old.case.line for _, group in report.groups for c in group)
        assert trapped
        assert trapped == changed
        argv = ("-c", str(reference), "-c", str(variant), "--examples", "0", str(corpus))
        status, out, _ = run(admin.diff_main, *argv)
        listed = [line for line in out.splitlines() if line.startswith(f"    {corpus}:")]
        assert (1, len(trapped)) == (status, len(listed))


def policy_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    write_config(tmp_path)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


class TestTestCommand:
    def test_collects_test_files_and_prints_the_tally(self, tmp_path: Path) -> None:
        """Only test_*.policy files count; the summary line is 'N passed, M failed'."""
        policy_tree(tmp_path, {"test_a.policy": GOOD, "sub/test_b.policy": BAD, "x.policy": BAD})
        config = str(tmp_path / "postgate.toml")
        status, out, _ = run(admin.test_main, "-c", config)
        assert (1, "4 passed, 1 failed") == (status, out.splitlines()[-1])
        assert f"{tmp_path / 'test_a.policy'} ...." in out.splitlines()
        assert "=== FAILURES ===" in out

    def test_all_passing_exits_zero(self, tmp_path: Path) -> None:
        """A directory of good tests passes."""
        policy_tree(tmp_path, {"test_a.policy": GOOD})
        config = str(tmp_path / "postgate.toml")
        status, out, _ = run(admin.test_main, "-c", config, str(tmp_path))
        assert (0, "4 passed, 0 failed") == (status, out.splitlines()[-1])

    def test_config_line_in_the_file_wins_over_the_option(self, tmp_path: Path) -> None:
        """'# config: other.toml' at the top makes the file use other.toml."""
        policy_tree(tmp_path, {"test_t.policy": "# config: other.toml\n\n" + BAD})
        write_config(
            tmp_path,
            RULES.replace(
                '"RELAY"\naction = "554 5.7.1 Relay access denied"', '"OURS2"\naction = "DUNNO"'
            ),
            "other.toml",
        )
        status, out, _ = run(admin.test_main, "-c", str(tmp_path / "postgate.toml"))
        assert (1, "0 passed, 1 failed") == (status, out.splitlines()[-1])
        assert "  actual rule:     OURS2" in out

    def test_no_expectations_exit_five(self, tmp_path: Path) -> None:
        """Nothing to check is not a pass."""
        policy_tree(tmp_path, {"test_a.policy": block("a@example.com")})
        status, out, _ = run(admin.test_main, "-c", str(tmp_path / "postgate.toml"))
        assert (5, "0 passed, 0 failed") == (status, out.splitlines()[-1])

    def test_refused_configuration_is_an_error_exit_78(self, tmp_path: Path) -> None:
        """A file whose config is refused is counted as an error, and the exit is 78."""
        policy_tree(tmp_path, {"test_a.policy": "# config: broken.toml\n\n" + GOOD})
        write_config(tmp_path, "[[rules]]\nbogus = 1\n", "broken.toml")
        status, out, err = run(admin.test_main, "-c", str(tmp_path / "postgate.toml"))
        assert (78, "0 passed, 0 failed, 1 error(s)") == (status, out.splitlines()[-1])
        assert "broken.toml" in err


def rules_of(doc: dict[str, object]) -> Sequence[object]:
    rules = doc["rules"]
    assert isinstance(rules, list)
    return rules


class TestExampleConfigs:
    def test_variant_is_reference_without_spamtrap(self) -> None:
        """rules-variant.toml is reference.toml without the SPAMTRAP rule and its list."""
        reference = tomllib.loads((EXAMPLES / "reference.toml").read_text())
        variant = tomllib.loads((EXAMPLES / "rules-variant.toml").read_text())
        kept = [r for r in rules_of(reference) if r["id"] != "SPAMTRAP"]  # type: ignore[index]
        lists = dict(reference["lists"])
        del lists["spamtraps"]
        assert len(kept) == len(rules_of(reference)) - 1
        assert {**reference, "lists": lists, "rules": kept} == variant

    def test_recording_config_is_reference_plus_record_table(self) -> None:
        """reference-recording.toml is reference.toml with recording switched on."""
        reference = tomllib.loads((EXAMPLES / "reference.toml").read_text())
        recording = tomllib.loads((EXAMPLES / "reference-recording.toml").read_text())
        record = recording.pop("record")
        assert (reference, True) == (recording, record["enabled"])

    def test_shipped_examples_hold_through_replay(self) -> None:
        """conf/examples/test_reference.policy passes against reference.toml."""
        status, out, _ = run(
            admin.replay_main,
            "-c",
            str(EXAMPLES / "reference.toml"),
            str(EXAMPLES / "test_reference.policy"),
        )
        assert (0, " 0 failed") == (status, out.rstrip().rpartition(",")[2])


def test_default_on_error_answers_dunno() -> None:
    """Without daemon.on_error a failing evaluation answers DUNNO, as the daemon does."""
    outcome = evaluate(failing_engine(), one_case(block("a@example.com")))
    assert ("DUNNO", "ON_ERROR") == (outcome.answer, outcome.rule)
