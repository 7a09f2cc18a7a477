"""The pytest plugin: test_*.policy files as items, same verdicts as replay."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from postgate.commands import rule_tests as admin
from tests.unit.support.replays import BAD, GOOD, RULES, block

if TYPE_CHECKING:
    import pytest

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An in-process run; the inner session must not stop the outer reactor (twisted)."""
    return pytester.runpytest("-p", "no:twisted", "-p", "no:hypothesispytest", *args)


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Item node id -> PASSED/FAILED, from the -rA short summary."""
    found = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        if word in {"PASSED", "FAILED"}:
            found[rest.split(" - ")[0]] = word
    return found


class TestCollection:
    def test_every_block_with_an_expectation_is_an_item(self, pytester: pytest.Pytester) -> None:
        """Four expectations in GOOD, one block without: four items, all passing."""
        pytester.makefile(".toml", postgate=RULES)
        pytester.makefile(".policy", test_mail=GOOD)
        result = run(pytester, "--collect-only", "-q")
        assert [
            "test_mail.policy::ours",
            "test_mail.policy::line10",
            "test_mail.policy::line17",
            "test_mail.policy::line24",
        ] == [line for line in result.outlines if "::" in line]

    def test_other_policy_files_are_not_collected(self, pytester: pytest.Pytester) -> None:
        """Only files named test_*.policy are tests; recordings are not."""
        pytester.makefile(".toml", postgate=RULES)
        pytester.makefile(".policy", mail=BAD)
        result = run(pytester)
        assert 5 == result.ret  # pytest's "no tests collected"

    def test_repeated_names_stay_distinct(self, pytester: pytest.Pytester) -> None:
        """Two blocks with the same '# name:' get the line appended to the second."""
        pytester.makefile(".toml", postgate=RULES)
        pytester.makefile(".policy", test_twice=BAD + BAD)
        result = run(pytester, "--collect-only", "-q")
        names = [line for line in result.outlines if "::" in line]
        assert ["test_twice.policy::wrong", "test_twice.policy::wrong@line10"] == names


class TestConfigChoice:
    def test_config_line_at_the_top_wins(self, pytester: pytest.Pytester) -> None:
        """'# config: rules/main.toml' is read relative to the policy file."""
        (pytester.path / "rules").mkdir()
        (pytester.path / "rules" / "main.toml").write_text(RULES)
        pytester.makefile(".toml", postgate="this is not toml")
        pytester.makefile(".policy", test_top="# config: rules/main.toml\n\n" + GOOD)
        run(pytester).assert_outcomes(passed=4)

    def test_ini_option_is_used_without_config_line(self, pytester: pytest.Pytester) -> None:
        """postgate_config in the ini file names the config, relative to the ini file."""
        (pytester.path / "etc").mkdir()
        (pytester.path / "etc" / "rules.toml").write_text(RULES)
        pytester.makeini("[pytest]\npostgate_config = etc/rules.toml\n")
        (pytester.path / "tests").mkdir()
        (pytester.path / "tests" / "test_ini.policy").write_text(GOOD)
        run(pytester).assert_outcomes(passed=4)

    def test_refused_configuration_is_a_collection_error(self, pytester: pytest.Pytester) -> None:
        """A broken config fails collection with every problem and no traceback."""
        pytester.makefile(".toml", postgate='[[rules]]\nid = "X"\nbogus = 1\n')
        pytester.makefile(".policy", test_broken=GOOD)
        result = run(pytester)
        result.assert_outcomes(errors=1)
        assert any("postgate.toml:3: rules[0] (X).bogus" in line for line in result.outlines)
        assert not any("Traceback" in line for line in result.outlines)

    def test_missing_configuration_says_how_to_name_one(self, pytester: pytest.Pytester) -> None:
        """No config found: the collection error tells about '# config:' and the ini option."""
        pytester.makefile(".policy", test_alone=GOOD)
        result = run(pytester)
        result.assert_outcomes(errors=1)
        assert any("'# config: PATH'" in line for line in result.outlines)

    def test_malformed_policy_file_is_a_collection_error(self, pytester: pytest.Pytester) -> None:
        """A line that is not name=value fails collection, naming file and line."""
        pytester.makefile(".toml", postgate=RULES)
        pytester.makefile(".policy", test_bad="# expect: DUNNO\nnot an attribute\n")
        result = run(pytester)
        result.assert_outcomes(errors=1)
        assert any("test_bad.policy:2" in line for line in result.outlines)


class TestFailureReport:
    def test_failure_shows_request_expected_actual_and_trace(
        self, pytester: pytest.Pytester
    ) -> None:
        """The report of a failed item is the replay diff, without a Python traceback."""
        pytester.makefile(".toml", postgate=RULES)
        pytester.makefile(".policy", test_fail=BAD)
        result = run(pytester)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                "*test_fail.policy:1 (wrong): expectation failed (answer and rule)",
                "  expected answer: DUNNO",
                "  actual answer:   554 5.7.1 Relay access denied",
                "  expected rule:   OURS",
                "  actual rule:     RELAY",
                "  request:",
                "    request=smtpd_access_policy",
                "*recipient=x@example.org",
                "  trace:",
                "*RELAY: matched -> 554 5.7.1 Relay access denied",
            ]
        )
        assert not any("Traceback" in line for line in result.outlines)


class TestSameVerdictsAsReplay:
    def test_mixed_file_fails_the_same_blocks_in_both(self, pytester: pytest.Pytester) -> None:
        """replay and the plugin pass and fail the very same blocks."""
        trap_wrong = block("trap@example.com", "198.51.100.4", "expect-rule: OURS")
        text = GOOD + BAD + trap_wrong
        config = pytester.makefile(".toml", postgate=RULES)
        policy = pytester.makefile(".policy", test_mixed=text)
        result = run(pytester, "-rA")
        plugin_failed = sorted(k for k, v in outcomes(result).items() if v == "FAILED")

        out = io.StringIO()
        status = admin.replay_main(["-c", str(config), str(policy)], out, io.StringIO())
        marker = ": expectation failed"
        replay_failed = [
            line.partition(marker)[0] for line in out.getvalue().splitlines() if marker in line
        ]
        assert 1 == status
        assert [f"{policy}:37 (wrong)", f"{policy}:46"] == replay_failed
        assert ["test_mixed.policy::line46", "test_mixed.policy::wrong"] == plugin_failed

    def test_shipped_reference_tests_pass_in_both(self, pytester: pytest.Pytester) -> None:
        """conf/examples/test_reference.policy: every item passes, as in replay."""
        for name in ("reference.toml", "test_reference.policy"):
            shutil.copy(EXAMPLES / name, pytester.path / name)
        shutil.copytree(EXAMPLES / "lists", pytester.path / "lists")
        pytester.makeini("[pytest]\npostgate_config = reference.toml\n")
        result = run(pytester, "-q")
        out = io.StringIO()
        argv = ["-c", str(EXAMPLES / "reference.toml"), str(EXAMPLES / "test_reference.policy")]
        assert 0 == admin.replay_main(argv, out, io.StringIO())
        held = out.getvalue().rstrip().rpartition("expectations: ")[2]
        result.assert_outcomes(passed=int(held.split()[0]))
