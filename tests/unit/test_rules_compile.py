"""Compiling rules: one clear error per mistake, groups, ids, describe, digest."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

import pytest

from postgate.wire.codec import PolicyRequest
from tests.unit.support.rules import (
    compile_problems,
    compile_toml,
    outcome,
    reference_ruleset,
    tried_order,
)

if TYPE_CHECKING:
    from pathlib import Path


def errors(text: str, base: Path | None = None) -> list[str]:
    return [str(p) for p in compile_problems(text, base)[1].errors]


class TestOneClearErrorEach:
    """The five mistakes `postgate check` must name clearly, each alone in a config."""

    def test_broken_regex(self) -> None:
        """A regex that does not compile names the rule, attribute and operator."""
        text = '[[rules]]\nid = "R"\nhelo_name = { regex = "^(mail" }\naction = "REJECT"\n'
        assert [
            (
                "postgate.toml: rules[0].helo_name.regex: /^(mail/: not a valid regular "
                "expression: missing ), unterminated subpattern at position 1"
            )
        ] == errors(text)

    def test_posix_class_in_a_regex(self) -> None:
        """re's FutureWarning for [[:alpha:]] becomes the error; nothing reaches stderr."""
        text = (
            '[[rules]]\nid = "R"\nhelo_name = { regex = \'^[[:alpha:]]+$\' }\naction = "REJECT"\n'
        )
        with warnings.catch_warnings(record=True) as leaked:
            warnings.simplefilter("always")
            found = errors(text)
        assert (
            [],
            [
                (
                    "postgate.toml: rules[0].helo_name.regex: /^[[:alpha:]]+$/: POSIX classes "
                    "such as [:alpha:] are not supported by Python's re (it reads [[:alpha:] as "
                    "one set of characters, then a literal ]); write [a-zA-Z] or [^\\W\\d_]"
                )
            ],
        ) == ([str(w.message) for w in leaked], found)

    def test_unknown_attribute(self) -> None:
        """A misspelt attribute gets a did-you-mean from the Postfix names."""
        text = '[[rules]]\nid = "R"\nclient_adress = "192.0.2.1"\naction = "REJECT"\n'
        assert [
            (
                "postgate.toml: rules[0].client_adress: unknown attribute (did you mean "
                "'client_address'?); see docs/rules.md for the names"
            )
        ] == errors(text)

    def test_missing_list_file(self, tmp_path: Path) -> None:
        """A list file that is not there is one error at lists.NAME.file."""
        text = (
            '[lists.bl]\ntype = "network"\nfile = "lists/missing.txt"\n'
            '[[rules]]\nid = "R"\nclient_address = { list = "bl" }\naction = "REJECT"\n'
        )
        assert [
            (
                f"postgate.toml: lists.bl.file: cannot read {tmp_path}/lists/missing.txt: "
                "No such file or directory"
            )
        ] == errors(text, tmp_path)

    def test_invalid_cidr(self) -> None:
        """An invalid network in a rule names its index."""
        text = (
            '[[rules]]\nid = "R"\nclient_address = { network = ["10.0.0.0/8", "10.0.0.0/33"] }\n'
            'action = "REJECT"\n'
        )
        assert [
            (
                "postgate.toml: rules[0].client_address.network[1]: '10.0.0.0/33' is not a "
                "network (prefix length out of range)"
            )
        ] == errors(text)

    def test_class_mismatched_reply(self) -> None:
        """`554 4.7.1` is refused with the reply module's explanation."""
        text = '[[rules]]\nid = "R"\nsize = { gt = 1 }\naction = "554 4.7.1 Go away"\n'
        assert [
            (
                "postgate.toml: rules[0].action: enhanced code 4.7.1 has class 4 but basic "
                "code 554 is permanent (5): Postfix would silently send 5.7.1; "
                "write '554 5.7.1 Go away'."
            )
        ] == errors(text)

    def test_all_five_together_give_five_errors_and_no_noise(self, tmp_path: Path) -> None:
        """One config with all five mistakes: exactly one error each, no follow-up warnings."""
        text = (
            '[lists.bl]\ntype = "network"\nfile = "lists/missing.txt"\n'
            '[lists.nets]\ntype = "network"\nitems = ["10.0.0.0/33"]\n'
            '[[rules]]\nid = "A"\nhelo_name = { regex = "^(mail" }\naction = "REJECT"\n'
            '[[rules]]\nid = "B"\nclient_adress = "192.0.2.1"\naction = "REJECT"\n'
            '[[rules]]\nid = "C"\nclient_address = { list = "bl" }\naction = "554 4.7.1 Go"\n'
            '[[rules]]\nid = "D"\nclient_address = { list = "nets" }\naction = "REJECT"\n'
        )
        _, problems = compile_problems(text, tmp_path)
        assert (
            [
                "lists.bl.file",
                "lists.nets.items[0]",
                "rules[0].helo_name.regex",
                "rules[1].client_adress",
                "rules[2].action",
            ],
            [],
        ) == ([p.place for p in problems.errors], problems.warnings)


class TestRuleShape:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ('size = { gt = 1 }\naction = "REJECT"', "rules[0].id: missing: give every rule"),
            ('id = "a b"\naction = "REJECT"', "rules[0].id: 'a b': give every rule"),
            ('id = "R"\nsize = { gt = 1 }', "rules[0]: needs an action"),
            ('id = "R"\naction = "OK"\nreply = "relay_denied"', "rules[0]: give either action"),
            ('id = "R"\nreply = "relay_deny"', "rules[0].reply: there is no named reply"),
            ('id = "R"\naction = "OK"\nstate = "RCTP"', "rules[0].state: 'RCTP' is not a protocol"),
            ('id = "R"\naction = "OK"\ndefault = "DUNNO"', "rules[0].default: only a group"),
            ('id = "R"\naction = "OK"\nactoin = "x"', "rules[0].actoin: unknown key (did you"),
            ('id = "R"\naction = "OK"\nsize = { gt = "5" }', "rules[0].size.gt: must be a whole"),
            ('id = "R"\naction = "OK"\nhelo_name = { gt = 5 }', "rules[0].helo_name.gt: numbers"),
            ('id = "R"\naction = "OK"\nhelo_name = { negate = true }', "rules[0].helo_name: needs"),
            ('id = "R"\naction = "OK"\nhelo_name = []', "rules[0].helo_name: must be a string"),
            ('id = "R"\naction = "OK"\nsender = { network = ["10/8"] }', "rules[0].sender.network"),
        ],
    )
    def test_each_mistake_is_reported_at_its_place(self, body: str, expected: str) -> None:
        """The first error starts with the place and the gist of the reason."""
        found = errors(f"[[rules]]\n{body}\n")
        assert (1, True) == (len(found), found[0].startswith(f"postgate.toml: {expected}"))

    def test_duplicate_ids_are_refused(self) -> None:
        """Ids name decisions in logs, so they must be unique across groups too."""
        text = (
            '[[rules]]\nid = "A"\naction = "OK"\nsize = { gt = 1 }\n'
            '[[rules]]\nid = "G"\n[[rules.rules]]\nid = "A"\naction = "OK"\n'
        )
        assert [
            "postgate.toml: rules[1].rules[0].id: 'A' is already used; ids must be unique"
        ] == errors(text)

    def test_every_error_is_collected_in_one_pass(self) -> None:
        text = "".join(f'[[rules]]\nid = "R{i}"\nhelo_nam = "x"\naction = "OK"\n' for i in range(3))
        assert 3 == len(errors(text))

    def test_a_rule_that_always_matches_warns_about_the_rest(self) -> None:
        """Rules after an unconditional rule can never run."""
        _, problems = compile_problems(
            '[[rules]]\nid = "ALL"\naction = "OK"\n[[rules]]\nid = "B"\naction = "REJECT"\n'
        )
        assert ["rules[0]: ALL always matches: the rules after it never run"] == [
            f"{p.place}: {p.reason}" for p in problems.warnings
        ]

    def test_states_are_case_insensitive_and_listable(self) -> None:
        """`state = ["rcpt", "DATA"]` scopes a rule to both stages."""
        compiled = compile_toml(
            '[[rules]]\nid = "R"\nstate = ["rcpt", "DATA"]\naction = "REJECT"\n'
        )
        assert ["R", "R", "DEFAULT"] == [
            outcome(compiled, protocol_state=s)[0] for s in ("RCPT", "DATA", "MAIL")
        ]


GROUPED = """
[[rules]]
id = "OUTSIDE"
state = "RCPT"
client_address = { network = ["10.0.0.0/8"], negate = true }
default = "554 5.7.1 Relay access denied"

  [[rules.rules]]
  id = "LOCAL"
  recipient_domain = "example.com"
  action = "DUNNO"

  [[rules.rules]]
  id = "INNER"
  helo_name = "x.example"

    [[rules.rules.rules]]
    id = "DEEP"
    sender = ""
    action = "REJECT"

[[rules]]
id = "AFTER"
action = "HOLD"
"""


class TestGroups:
    def test_group_children_are_tried_in_order(self) -> None:
        """Inside a group the first child that matches decides."""
        compiled = compile_toml(GROUPED)
        assert ("LOCAL", "DUNNO") == outcome(
            compiled, protocol_state="RCPT", client_address="192.0.2.1", recipient="a@example.com"
        )

    def test_nested_group_decides(self) -> None:
        compiled = compile_toml(GROUPED)
        assert ("DEEP", "REJECT") == outcome(
            compiled, protocol_state="RCPT", client_address="192.0.2.1", helo_name="x.example"
        )

    def test_group_default_decides_with_the_group_id(self) -> None:
        """When no child decides, the group's default answers as the group."""
        compiled = compile_toml(GROUPED)
        assert ("OUTSIDE", "554 5.7.1 Relay access denied") == outcome(
            compiled, protocol_state="RCPT", client_address="192.0.2.1", recipient="a@x.example"
        )

    def test_group_that_does_not_match_is_skipped(self) -> None:
        """Outside the group's conditions evaluation goes on after it."""
        compiled = compile_toml(GROUPED)
        assert ("AFTER", "HOLD") == outcome(
            compiled, protocol_state="RCPT", client_address="10.9.9.9"
        )

    def test_group_without_default_goes_on(self) -> None:
        """Without a default, a group whose children all fail hands on to the next rule."""
        compiled = compile_toml(GROUPED.replace('default = "554 5.7.1 Relay access denied"', ""))
        assert ("AFTER", "HOLD") == outcome(
            compiled, protocol_state="RCPT", client_address="192.0.2.1"
        )

    def test_group_with_an_action_is_refused(self) -> None:
        """A group decides only through children or its default."""
        text = '[[rules]]\nid = "G"\naction = "OK"\n[[rules.rules]]\nid = "C"\naction = "OK"\n'
        assert [
            (
                "postgate.toml: rules[0].action: a group has no own action or shortcut; "
                "put it in a rule inside, or use default = ..."
            )
        ] == errors(text)

    def test_nesting_is_bounded(self) -> None:
        """Groups nest at most four deep."""
        text = '[[rules]]\nid = "G0"\n'
        prefix = "rules"
        for depth in range(1, 5):
            prefix += ".rules"
            text += f'[[{prefix}]]\nid = "G{depth}"\n'
        text += f'[[{prefix}.rules]]\nid = "LEAF"\naction = "OK"\n'
        assert [
            "postgate.toml: rules[0].rules[0].rules[0].rules[0].rules: groups nest at most 4 deep"
        ] == errors(text)


class TestDescribeAndDigest:
    def test_describe_lists_rules_in_engine_order(self) -> None:
        """`postgate show` prints the ids in the order they are tried, groups indented."""
        lines = reference_ruleset().describe()
        order = [m.group(1) for line in lines if (m := re.match(r"\s+([A-Z_]+):", line))]
        assert tried_order(reference_ruleset()) == order

    def test_describe_shows_shortcut_expansion(self) -> None:
        lines = reference_ruleset().describe()
        assert (
            "    SIZE: [size_limit] if size > 10485760 "
            "-> 552 5.3.4 Message size exceeds fixed limit"
        ) in lines

    def test_rule_count_counts_groups_and_children(self) -> None:
        """15 rules: 7 top-level, the group, and its 7 children."""
        assert 15 == reference_ruleset().rule_count

    def test_digest_is_stable_and_changes_with_list_contents(self, tmp_path: Path) -> None:
        """Same config, same digest; one more list entry, a new digest."""
        (tmp_path / "l.txt").write_text("192.0.2.0/24\n")
        text = (
            '[lists.l]\ntype = "network"\nfile = "l.txt"\n'
            '[[rules]]\nid = "R"\nclient_address = { list = "l" }\naction = "REJECT"\n'
        )
        first = compile_problems(text, tmp_path)[0].digest
        again = compile_problems(text, tmp_path)[0].digest
        (tmp_path / "l.txt").write_text("192.0.2.0/24\n198.51.100.0/24\n")
        changed = compile_problems(text, tmp_path)[0].digest
        assert (12, True, False) == (len(first), first == again, first == changed)


class TestTrace:
    def test_trace_names_each_rule_tried_and_the_failed_condition(self) -> None:
        """A trace shows why each earlier rule did not match."""
        compiled = compile_toml(GROUPED)
        request = PolicyRequest(
            {"protocol_state": "RCPT", "client_address": "192.0.2.1", "recipient": "a@x.example"}
        )
        assert (
            "OUTSIDE: group matched, trying its rules",
            '    LOCAL: failed: recipient_domain = "example.com"',
            '    INNER: failed: helo_name = "x.example"',
            "OUTSIDE: no rule in the group decided -> default 554 5.7.1 Relay access denied",
        ) == compiled.decide(request, trace=True).trace

    def test_no_trace_unless_asked(self) -> None:
        """The hot path does not build trace lines."""
        compiled = compile_toml(GROUPED)
        assert () == compiled.decide(PolicyRequest({})).trace

    def test_default_when_nothing_matches(self) -> None:
        """No rule matched: DUNNO with rule DEFAULT, and the trace says so."""
        compiled = compile_toml('[[rules]]\nid = "R"\nsize = { gt = 5 }\naction = "REJECT"\n')
        decision = compiled.decide(PolicyRequest({"size": "1"}), trace=True)
        assert (
            "DEFAULT",
            "DUNNO",
            ("R: failed: size > 5", "DEFAULT: no rule matched -> DUNNO"),
        ) == (
            decision.rule,
            decision.action.line,
            decision.trace,
        )

    def test_empty_config_is_an_empty_ruleset(self) -> None:
        """A config without rules answers DUNNO to everything."""
        compiled, problems = compile_problems("")
        assert ([], 0, ("DEFAULT", "DUNNO")) == (
            problems.errors,
            compiled.rule_count,
            outcome(compiled, sender="a@b"),
        )
