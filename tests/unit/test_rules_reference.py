"""The reference ruleset answers every recorded request exactly as issue 4 says."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import collections
import tomllib
from pathlib import Path

import pytest

from postgate.corpus import Case, read_policy_file
from postgate.problems import Problems
from postgate.rules import Ruleset, compile_ruleset

ROOT = Path(__file__).parents[2]
REFERENCE = ROOT / "conf" / "examples" / "reference.toml"
CASES = read_policy_file(ROOT / "conf" / "examples" / "test_reference.policy")
EDGE = read_policy_file(ROOT / "tests" / "corpus" / "reference-edge.policy")
RULE_IDS = [
    "SIZE",
    "TRUSTED_CERT",
    "CLIENT_BLOCKLIST",
    "SENDER_BLOCKLIST",
    "STARTTLS_REQUIRED",
    "TOO_MANY_RECIPIENTS",
    "SPAMTRAP",
    "HELO_LOCALHOST",
    "HELO_BARE_IP",
    "CLIENT_UNKNOWN",
    "CLIENT_DYNAMIC",
    "LOCAL_SENDER",
    "LOCAL_RECIPIENT",
    "RELAY",
]


def load() -> tuple[Ruleset, Problems]:
    problems = Problems(str(REFERENCE))
    doc = tomllib.loads(REFERENCE.read_text())
    return compile_ruleset(doc, REFERENCE.parent, problems), problems


RULESET, PROBLEMS = load()


class TestReferenceConfig:
    def test_loads_without_errors_or_warnings(self) -> None:
        """The shipped reference config and its lists are clean."""
        assert ([], []) == (PROBLEMS.errors, PROBLEMS.warnings)

    def test_every_rule_has_at_least_three_cases(self) -> None:
        """Issue 4: at least three recorded requests per rule, near misses included."""
        by_topic = collections.Counter(case.name.split(" - ")[0] for case in CASES)
        assert dict.fromkeys(RULE_IDS, True) == {rule: by_topic[rule] >= 3 for rule in RULE_IDS}

    def test_every_case_carries_both_expectations(self) -> None:
        """Each block says which answer and which rule it expects."""
        assert [] == [c.name for c in CASES if c.expect is None or c.expect_rule is None]


def check(case: Case) -> None:
    decision = RULESET.decide(case.request)
    assert (case.expect, case.expect_rule) == (decision.action.line, decision.rule), "\n".join(
        RULESET.decide(case.request, trace=True).trace
    )


class TestReferenceAnswers:
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_recorded_request(self, case: Case) -> None:
        """The answer and the rule id are exactly the expected ones."""
        check(case)

    @pytest.mark.parametrize("case", EDGE, ids=[c.name for c in EDGE])
    def test_edge_request(self, case: Case) -> None:
        """Hostile and unusual requests get the answers the rules imply."""
        check(case)
