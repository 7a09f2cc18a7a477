"""The blocklist, size_limit and relay_check shortcuts and their defaults."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.unit.support.rules import compile_problems, outcome

if TYPE_CHECKING:
    from postgate.config.problems import Problems
    from postgate.rules import Ruleset

LISTS = """
[lists.clients]
type = "network"
items = ["192.0.2.0/24", "2001:db8:bad::/48"]
[lists.hosts]
type = "domain"
items = ["spam.example"]
subdomains = true
[lists.senders]
type = "address"
items = ["boss@example.org"]
[lists.domains]
type = "domain"
items = ["example.com"]
[lists.mynet]
type = "network"
items = ["10.0.0.0/8"]
"""


def compile_rule(rule: str) -> tuple[Ruleset, Problems]:
    """Rule S made of ``rule``, with the lists above."""
    return compile_problems(f'{LISTS}\n[[rules]]\nid = "S"\n{rule}\n')


def answer(compiled: Ruleset, **attrs: str) -> str:
    """Rule id and reply line in one string, so a parametrize row reads like a log line."""
    return " ".join(outcome(compiled, **attrs))


class TestBlocklist:
    @pytest.mark.parametrize(
        ("attribute", "list_name", "attrs", "reply"),
        [
            ("client_address", "clients", {"client_address": "192.0.2.9"},
             "554 5.7.1 Access denied: client blocked by local policy"),
            ("client_address", "clients", {"client_address": "2001:db8:bad::25"},
             "554 5.7.1 Access denied: client blocked by local policy"),
            ("client_name", "hosts", {"client_name": "mx1.SPAM.example"},
             "554 5.7.1 Access denied: client blocked by local policy"),
            ("helo_name", "hosts", {"helo_name": "spam.example"},
             "554 5.7.1 Access denied: HELO name blocked by local policy"),
            ("sender", "senders", {"sender": "Boss@Example.org"},
             "550 5.7.1 Sender blocked by local policy"),
            ("recipient_domain", "domains", {"recipient": "x@example.com"},
             "550 5.7.1 Recipient blocked by local policy"),
        ],
    )  # fmt: skip
    def test_default_reply_per_attribute(
        self, attribute: str, list_name: str, attrs: dict[str, str], reply: str
    ) -> None:
        """Each blocked attribute gets the wording of docs/replies.md (Named replies) for it."""
        compiled, problems = compile_rule(
            f'blocklist = {{ attribute = "{attribute}", list = "{list_name}" }}'
        )
        assert ([], f"S {reply}") == (problems.errors, answer(compiled, **attrs))

    def test_an_action_overrides_the_default(self) -> None:
        compiled, _ = compile_rule(
            'blocklist = { attribute = "client_address", list = "clients" }\naction = "DISCARD"'
        )
        assert "S DISCARD" == answer(compiled, client_address="192.0.2.1")

    def test_extra_conditions_are_anded(self) -> None:
        """A shortcut combines with state and other conditions."""
        compiled, _ = compile_rule(
            'blocklist = { attribute = "client_address", list = "clients" }\nstate = "RCPT"'
        )
        assert ("S", "DEFAULT") == (
            answer(compiled, client_address="192.0.2.1", protocol_state="RCPT").split()[0],
            answer(compiled, client_address="192.0.2.1", protocol_state="DATA").split()[0],
        )

    def test_unlisted_client_passes(self) -> None:
        compiled, _ = compile_rule('blocklist = { attribute = "client_address", list = "clients" }')
        assert "DEFAULT DUNNO" == answer(compiled, client_address="198.51.100.1")

    def test_unsupported_attribute_is_refused(self) -> None:
        """Only the attributes with a default reply can be blocklisted."""
        _, problems = compile_rule('blocklist = { attribute = "size", list = "clients" }')
        assert [
            (
                "rules[0].blocklist.attribute: must be one of client_address, client_name, "
                "reverse_client_name, helo_name, sender, sender_domain, recipient, recipient_domain"
            )
        ] == [f"{p.place}: {p.reason}" for p in problems.errors]


class TestSizeLimit:
    def test_over_the_limit_is_552(self) -> None:
        """size > N answers 552 5.3.4 by default."""
        compiled, _ = compile_rule("size_limit = 1000")
        assert ("S 552 5.3.4 Message size exceeds fixed limit", "DEFAULT DUNNO") == (
            answer(compiled, size="1001"),
            answer(compiled, size="1000"),
        )

    def test_missing_size_is_zero(self) -> None:
        """No SIZE= declared: size=0, never over a limit."""
        compiled, _ = compile_rule("size_limit = 0")
        assert "DEFAULT DUNNO" == answer(compiled)

    def test_a_non_number_is_refused(self) -> None:
        """size_limit = "10M" is a mistake to report, not to guess."""
        _, problems = compile_rule('size_limit = "10M"')
        assert ["rules[0].size_limit"] == [p.place for p in problems.errors]


class TestRelayCheck:
    RULE = 'relay_check = { local_domains = "domains", mynetworks = "mynet" }'

    @pytest.mark.parametrize(
        ("attrs", "expected"),
        [
            ({"recipient": "a@example.org", "client_address": "192.0.2.1"},
             "S 554 5.7.1 Relay access denied"),
            ({"recipient": "a@EXAMPLE.com", "client_address": "192.0.2.1"}, "DEFAULT DUNNO"),
            ({"recipient": "a@example.org", "client_address": "10.1.1.1"}, "DEFAULT DUNNO"),
            ({"recipient": "a@example.org", "client_address": "::ffff:10.1.1.1"}, "DEFAULT DUNNO"),
            ({"recipient": "a@example.org", "client_address": "192.0.2.1",
              "sasl_username": "alice"}, "DEFAULT DUNNO"),
            ({"recipient": "", "client_address": "192.0.2.1", "protocol_state": "DATA"},
             "DEFAULT DUNNO"),
        ],
    )  # fmt: skip
    def test_relay_rules(self, attrs: dict[str, str], expected: str) -> None:
        """Foreign recipient, foreign client, not logged in, at RCPT: relay denied."""
        compiled, _ = compile_rule(self.RULE)
        assert expected == answer(compiled, **{"protocol_state": "RCPT", **attrs})

    def test_inline_domains_and_networks(self) -> None:
        """Lists may be written inline instead of named."""
        compiled, problems = compile_rule(
            'relay_check = { local_domains = ["example.com"], mynetworks = ["10.0.0.0/8"] }'
        )
        assert ([], "S 554 5.7.1 Relay access denied") == (
            problems.errors,
            answer(compiled, protocol_state="RCPT", recipient="a@example.net"),
        )

    def test_describe_shows_the_expansion(self) -> None:
        compiled, _ = compile_rule(self.RULE)
        assert (
            '    S: [relay_check] if protocol_state = "RCPT" and not (recipient_domain in list '
            "domains (domain, 1 entries)) and not (client_address in list mynet (network, 1 "
            "entries)) and sasl_username is empty -> 554 5.7.1 Relay access denied"
        ) in compiled.describe()

    def test_missing_local_domains_is_refused(self) -> None:
        """Without local domains every recipient would be relaying."""
        _, problems = compile_rule('relay_check = { mynetworks = "mynet" }')
        assert [
            (
                "rules[0].relay_check: needs local_domains: "
                'relay_check = { local_domains = "LIST", mynetworks = "LIST" }'
            )
        ] == [f"{p.place}: {p.reason}" for p in problems.errors]

    def test_two_shortcuts_in_one_rule_are_refused(self) -> None:
        """One rule, one shortcut: otherwise the default reply is ambiguous."""
        _, problems = compile_rule(f"size_limit = 5\n{self.RULE}")
        assert ["rules[0]: one shortcut per rule, not size_limit and relay_check"] == [
            f"{p.place}: {p.reason}" for p in problems.errors
        ]
