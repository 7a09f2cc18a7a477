"""Rules and groups in mode = "observe": noted, never answered, the walk goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postgate.commands.replay import (
    describe_diff,
    describe_outcome,
    diff,
    load_engine,
    replay,
    summarize,
)
from postgate.wire.codec import PolicyRequest
from postgate.wire.policy_files import parse_policy_text
from tests.unit.support.rules import compile_problems, compile_toml

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.commands.replay import Engine
    from postgate.wire.policy_files import Case

RULES = """
[[rules]]
id = "NEW_BLOCK"
mode = "observe"
helo_name = "bad"
action = "554 5.7.1 no"

[[rules]]
id = "G"
mode = "observe"
sender_domain = "spam.example"
default = "450 4.7.1 later"
rules = [
  { id = "G1", recipient = "a@x.example", action = "REJECT g1" },
  { id = "G2", mode = "observe", recipient = "b@x.example", action = "REJECT g2" },
  { id = "G3", rules = [{ id = "G31", recipient = "c@x.example", action = "HOLD" }] },
]

[[rules]]
id = "ALWAYS_WATCHED"
mode = "observe"
action = "DEFER_IF_PERMIT watched"

[[rules]]
id = "REAL"
helo_name = "bad"
action = "REJECT real"
"""

# request -> (deciding rule, observed rule ids in order)
CASES = [
    ({}, ("DEFAULT", ("ALWAYS_WATCHED",))),
    ({"helo_name": "bad"}, ("REAL", ("NEW_BLOCK", "ALWAYS_WATCHED"))),
    (
        {"helo_name": "bad", "sender": "s@spam.example", "recipient": "a@x.example"},
        ("REAL", ("NEW_BLOCK", "G1", "ALWAYS_WATCHED")),
    ),
    (
        {"sender": "s@spam.example", "recipient": "b@x.example"},
        ("DEFAULT", ("G2", "G", "ALWAYS_WATCHED")),
    ),
    (
        {"sender": "s@spam.example", "recipient": "c@x.example"},
        ("DEFAULT", ("G31", "ALWAYS_WATCHED")),
    ),
    (
        {"sender": "s@spam.example", "recipient": "z@x.example"},
        ("DEFAULT", ("G", "ALWAYS_WATCHED")),
    ),
]


@pytest.mark.parametrize(("attrs", "expected"), CASES)
def test_generated_and_walked_agree(
    attrs: dict[str, str], expected: tuple[str, tuple[str, ...]]
) -> None:
    ruleset = compile_toml(RULES)
    request = PolicyRequest({"protocol_state": "RCPT", **attrs})
    fast = ruleset.program(request.raw)
    walked = ruleset.decide(request, trace=True)
    assert expected == (fast.rule, tuple(d.rule for d in fast.observed))
    assert expected == (walked.rule, tuple(d.rule for d in walked.observed))
    assert [d.action.line for d in fast.observed] == [d.action.line for d in walked.observed]


def test_group_default_is_what_an_observed_group_would_answer() -> None:
    found = compile_toml(RULES).program({"sender": "s@spam.example", "recipient": "z@x.example"})
    assert "450 4.7.1 later" == found.observed[0].action.line


def test_trace_says_observed() -> None:
    walked = compile_toml(RULES).decide(PolicyRequest({"helo_name": "bad"}), trace=True)
    assert "NEW_BLOCK: matched, observed (not answered) -> 554 5.7.1 no" in walked.trace


def test_without_observed_rules_nothing_is_generated_for_them() -> None:
    ruleset = compile_toml('[[rules]]\nid = "A"\nhelo_name = "x"\naction = "OK"\n')
    assert "o = []" not in ruleset.source
    assert "_observed" not in ruleset.source
    assert () == ruleset.program({"helo_name": "x"}).observed


def test_an_unconditional_observed_rule_hides_nothing() -> None:
    _, problems = compile_problems(RULES)
    assert [] == [str(p) for p in problems.warnings]


def test_mode_is_in_show_and_the_digest() -> None:
    plain = compile_toml(RULES.replace('mode = "observe"\n', "", 1))
    watched = compile_toml(RULES)
    assert plain.digest != watched.digest
    assert any("NEW_BLOCK: [observe: not answered]" in line for line in watched.describe())


def test_unknown_mode_is_an_error() -> None:
    _, problems = compile_problems('[[rules]]\nid = "A"\nmode = "watch"\naction = "OK"\n')
    assert ["rules[0].mode: 'watch' is not one of enforce, observe"] == [
        f"{p.place}: {p.reason}" for p in problems.errors
    ]


class TestReplayAndDiff:
    """Observed rules are reported apart; the answers are the enforcing rules'."""

    def engine(self, tmp_path: Path, text: str, name: str) -> Engine:
        path = tmp_path / name
        path.write_text(text)
        return load_engine(path)

    def cases(self) -> list[Case]:
        text = "".join(
            f"protocol_state=RCPT\nhelo_name={helo}\nsender=s@spam.example\nrecipient=a@x.example\n\n"
            for helo in ("bad", "good", "bad")
        )
        return parse_policy_text(text, "cases.policy")

    def test_replay_reports_observed_rules_apart(self, tmp_path: Path) -> None:
        outcomes = replay(self.engine(tmp_path, RULES, "a.toml"), self.cases())
        assert ["REJECT real", "DUNNO", "REJECT real"] == [o.answer for o in outcomes]
        assert ("NEW_BLOCK", "554 5.7.1 no") == outcomes[0].observed[0]
        assert "(observed NEW_BLOCK: 554 5.7.1 no)" in describe_outcome(outcomes[0])
        summary = summarize(outcomes)
        start = summary.index('observed, not answered (mode = "observe"):')
        assert [["ALWAYS_WATCHED", "3"], ["G1", "3"], ["NEW_BLOCK", "2"]] == [
            line.split() for line in summary[start + 1 :]
        ]

    def test_diff_counts_observed_rules_old_and_new(self, tmp_path: Path) -> None:
        old = self.engine(
            tmp_path,
            RULES.replace('id = "NEW_BLOCK"\nmode = "observe"', 'id = "NEW_BLOCK"'),
            "old.toml",
        )
        new = self.engine(tmp_path, RULES, "new.toml")
        report = diff(old, new, self.cases())
        assert 2 == report.changed  # NEW_BLOCK answered in old, REAL in new
        lines = describe_diff(report)
        assert "  NEW_BLOCK: 0 -> 2" in lines
        assert "  ALWAYS_WATCHED: 1 -> 3" in lines  # NEW_BLOCK answered first in old
        assert "  G1: 1 -> 3" in lines


HELOS = st.sampled_from(["bad", "good", "localhost", ""])
SENDERS = st.sampled_from(["s@spam.example", "x@y.example", ""])
RECIPIENTS = st.sampled_from(["a@x.example", "b@x.example", "c@x.example", "z@x.example", ""])


@settings(max_examples=200, deadline=None)
@given(HELOS, SENDERS, RECIPIENTS)
def test_fast_path_and_walk_agree_on_any_mix(helo: str, sender: str, recipient: str) -> None:
    ruleset = compile_toml(RULES)
    request = PolicyRequest({"helo_name": helo, "sender": sender, "recipient": recipient})
    fast, walked = ruleset.program(request.raw), ruleset.decide(request, trace=True)
    assert (fast.rule, fast.observed) == (walked.rule, walked.observed)
