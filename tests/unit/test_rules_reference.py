"""The reference ruleset answers every request as conf/examples/test_reference.policy expects."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import collections

import pytest

from postgate.wire.policy_files import Case, read_policy_file
from tests.unit.support.rules import ROOT, reference_compiled, rule_ids, rule_of

CASES = read_policy_file(ROOT / "conf" / "examples" / "test_reference.policy")
EDGE = read_policy_file(ROOT / "tests" / "corpus" / "reference-edge.policy")
RULESET, PROBLEMS = reference_compiled()
RULE_IDS = rule_ids(RULESET)


class TestReferenceConfig:
    def test_loads_without_errors_or_warnings(self) -> None:
        """The shipped reference config and its lists are clean."""
        assert ([], []) == (PROBLEMS.errors, PROBLEMS.warnings)

    def test_every_rule_has_at_least_three_cases(self) -> None:
        """At least three recorded requests per rule, near misses included."""
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


# An untrusted client at RCPT that no rule of the group blocks (mail for us).
UNTRUSTED = {
    "protocol_state": "RCPT",
    "client_address": "192.0.2.10",
    "client_name": "mail.example.org",
    "reverse_client_name": "mail.example.org",
    "helo_name": "mail.example.org",
    "sender": "alice@example.org",
    "recipient": "bob@example.com",
}


class TestPaddedValues:
    @pytest.mark.parametrize(
        ("helo", "expected"),
        [
            ("1" * 1018 + ".2.3.4" + "x" * 4000, "HELO_BARE_IP"),
            ("192.0.2.1" + " " * 4000, "LOCAL_RECIPIENT"),
            ("x" + "1" * 1018 + ".2.3.4", "LOCAL_RECIPIENT"),
        ],
        ids=["bare IP in the first 1024", "padded after an IP", "IP straddles the cut"],
    )
    def test_bare_ip_helo_is_judged_on_its_first_1024_characters(
        self, helo: str, expected: str
    ) -> None:
        """HELO_BARE_IP matches a long HELO exactly when its first 1024 characters are an IP."""
        assert expected == rule_of(RULESET, **{**UNTRUSTED, "helo_name": helo})

    @pytest.mark.parametrize(
        ("client_name", "expected"),
        [
            ("host.dyn-1." + "a" * 4989, "CLIENT_DYNAMIC"),
            ("dyn-1.example.net" + "." * 4983, "CLIENT_DYNAMIC"),
            ("a" * 1100 + ".dyn-1.example.net", "LOCAL_RECIPIENT"),
        ],
        ids=["dyn-1. near the start", "dyn-1. then dots", "dyn-1. past the cut"],
    )
    def test_padding_a_dynamic_client_name_does_not_get_round_the_rule(
        self, client_name: str, expected: str
    ) -> None:
        """A 5000-character client_name is still dynamic when dyn-1. is in its head."""
        assert expected == rule_of(
            RULESET, **{**UNTRUSTED, "client_name": client_name, "reverse_client_name": client_name}
        )
