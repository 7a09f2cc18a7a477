"""Each matcher against the values Postfix really sends, and against garbage."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from postgate.wire.codec import PolicyRequest
from tests.unit.support.rules import compile_toml, rule_of

if TYPE_CHECKING:
    from postgate.rules import Ruleset


def rule(condition: str, lists: str = "") -> Ruleset:
    """One rule HIT with ``condition`` answering REJECT."""
    return compile_toml(f'{lists}\n[[rules]]\nid = "HIT"\n{condition}\naction = "REJECT"\n')


def hits(compiled: Ruleset, **attrs: str) -> bool:
    """Whether rule HIT decides a request made of ``attrs``."""
    return "HIT" == rule_of(compiled, **attrs)


class TestEquality:
    def test_a_plain_string_matches_the_same_value(self) -> None:
        assert hits(rule('helo_name = "localhost"'), helo_name="localhost")

    def test_host_names_compare_case_insensitively(self) -> None:
        """HELO and host names are DNS names, so case does not matter."""
        compiled = rule('helo_name = "LocalHost"')
        assert [True, True] == [
            hits(compiled, helo_name="LOCALHOST"),
            hits(compiled, helo_name="localhost"),
        ]

    def test_a_trailing_dot_on_a_domain_is_ignored(self) -> None:
        assert hits(rule('helo_name = "mx.example.com"'), helo_name="mx.example.com.")

    def test_a_list_of_values_is_ored(self) -> None:
        compiled = rule('client_name = ["a.example", "b.example"]')
        assert [True, True, False] == [
            hits(compiled, client_name=n) for n in ("a.example", "B.example", "c.example")
        ]

    def test_login_names_compare_exactly(self) -> None:
        """sasl_username is not a DNS name; its case is kept."""
        compiled = rule('sasl_username = "Alice"')
        assert (True, False) == (
            hits(compiled, sasl_username="Alice"),
            hits(compiled, sasl_username="alice"),
        )

    def test_empty_string_matches_the_null_sender(self) -> None:
        """`sender = ""` is how a rule names bounces (docs/protocol.md, Attributes)."""
        compiled = rule('sender = ""\nprotocol_state = "RCPT"')
        assert (True, False) == (
            hits(compiled, sender="", protocol_state="RCPT"),
            hits(compiled, sender="a@example.org", protocol_state="RCPT"),
        )

    def test_a_missing_attribute_reads_as_empty(self) -> None:
        """An absent attribute is the same as `name=` (Postfix sends both)."""
        assert hits(rule('sender = ""'))

    def test_fingerprints_match_with_or_without_colons_in_any_case(self) -> None:
        """Fingerprints are hex; colons and case are formatting only."""
        compiled = rule('ccert_fingerprint = "ab:cd:ef:01"')
        assert [True, True] == [
            hits(compiled, ccert_fingerprint="AB:CD:EF:01"),
            hits(compiled, ccert_fingerprint="abcdef01"),
        ]

    def test_equals_operator_can_be_negated(self) -> None:
        """`{ equals = ..., negate = true }` is "is not"."""
        compiled = rule('protocol_state = { equals = "RCPT", negate = true }')
        assert (False, True) == (
            hits(compiled, protocol_state="RCPT"),
            hits(compiled, protocol_state="DATA"),
        )


class TestDerivedAttributes:
    def test_sender_domain_is_the_part_after_the_last_at(self) -> None:
        """A quoted local part may contain "@"; the domain follows the last one."""
        compiled = rule('sender_domain = "example.org"')
        assert hits(compiled, sender='"a@b"@Example.ORG')

    def test_localpart_is_the_part_before_the_last_at(self) -> None:
        """recipient_localpart compares case-insensitively like the address."""
        assert hits(rule('recipient_localpart = "postmaster"'), recipient="PostMaster@x.example")

    def test_an_address_without_at_has_no_domain(self) -> None:
        """`postmaster` alone: localpart is all of it, the domain is empty."""
        compiled = rule('recipient_domain = { empty = true }\nrecipient_localpart = "postmaster"')
        assert hits(compiled, recipient="postmaster")

    def test_the_null_sender_has_an_empty_domain(self) -> None:
        """A bounce has neither local part nor domain."""
        compiled = rule("sender_domain = { empty = true }\nsender_localpart = { empty = true }")
        assert hits(compiled, sender="")


class TestNetworks:
    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("192.0.2.1", True),
            ("192.0.2.255", True),
            ("192.0.3.0", False),
            ("::ffff:192.0.2.7", True),
            ("::FFFF:192.0.2.7", True),
            ("2001:db8::1", True),
            ("2001:DB8:0:0::99", True),
            ("2001:db9::1", False),
            ("unknown", False),
            ("", False),
            ("192.0.2.1%eth0", False),
        ],
    )
    def test_ipv4_ipv6_and_mapped_addresses(self, address: str, expected: bool) -> None:
        """IPv4 and IPv6 CIDRs match; an IPv4-mapped address matches its IPv4 entry."""
        compiled = rule('client_address = { network = ["192.0.2.0/24", "2001:db8::/32"] }')
        assert expected == hits(compiled, client_address=address)

    def test_mapped_entries_match_plain_ipv4_clients(self) -> None:
        """An entry written as ::ffff:a.b.c.d/n is folded to IPv4 too."""
        compiled = rule('client_address = { network = ["::ffff:198.51.100.0/120"] }')
        assert hits(compiled, client_address="198.51.100.9")

    def test_a_bare_address_is_a_single_host(self) -> None:
        """`192.0.2.66` means /32."""
        compiled = rule('client_address = { network = ["192.0.2.66"] }')
        assert (True, False) == (
            hits(compiled, client_address="192.0.2.66"),
            hits(compiled, client_address="192.0.2.67"),
        )

    def test_negated_network_is_outside(self) -> None:
        """`negate = true` turns "in mynetworks" into "outside mynetworks"."""
        compiled = rule('client_address = { network = ["10.0.0.0/8"], negate = true }')
        assert (False, True) == (
            hits(compiled, client_address="10.1.1.1"),
            hits(compiled, client_address="192.0.2.1"),
        )


class TestDomains:
    def test_domain_without_subdomains_is_exact(self) -> None:
        compiled = rule('client_name = { domain = ["example.net"] }')
        assert (True, False) == (
            hits(compiled, client_name="EXAMPLE.net"),
            hits(compiled, client_name="mx.example.net"),
        )

    def test_subdomains_reach_any_depth(self) -> None:
        """With subdomains = true every name below matches, and the domain itself."""
        compiled = rule('client_name = { domain = ["example.net"], subdomains = true }')
        assert [True, True, True, False] == [
            hits(compiled, client_name=n)
            for n in ("example.net", "mx.example.net", "a.b.c.example.net", "badexample.net")
        ]

    def test_an_absurdly_long_name_does_not_match_or_crash(self) -> None:
        """A 64 KB HELO with thousands of dots is refused cheaply."""
        compiled = rule('helo_name = { domain = ["example.net"], subdomains = true }')
        assert not hits(compiled, helo_name="a." * 30000 + "example.net")


class TestNumbers:
    @pytest.mark.parametrize(
        ("op", "value", "expected"),
        [
            ("gt", "11", True),
            ("gt", "10", False),
            ("ge", "10", True),
            ("lt", "9", True),
            ("le", "10", True),
            ("eq", "10", True),
            ("ne", "10", False),
        ],
    )
    def test_each_comparison(self, op: str, value: str, expected: bool) -> None:
        """gt/ge/lt/le/eq/ne compare the number with the limit 10."""
        assert expected == hits(rule(f"size = {{ {op} = 10 }}"), size=value)

    @pytest.mark.parametrize("value", ["", "abc", "-5", "1e9", "١٢٣", " "])
    def test_missing_or_non_numeric_counts_as_zero(self, value: str) -> None:
        """Anything but plain digits is 0 (docs/rules.md, Operator tables)."""
        assert hits(rule("size = { eq = 0 }"), size=value)

    def test_absent_number_counts_as_zero(self) -> None:
        assert hits(rule("encryption_keysize = { lt = 128 }"))

    def test_a_huge_digit_string_is_huge_not_an_error(self) -> None:
        """Thousands of digits exceed Python's int parsing limit; still bigger than any limit."""
        assert hits(rule("size = { gt = 10485760 }"), size="9" * 5000)

    def test_an_integer_value_means_equal(self) -> None:
        """`recipient_count = 1` on a number is `eq = 1`."""
        assert hits(rule("recipient_count = 1"), recipient_count="1")


class TestEmptyAndPresent:
    def test_empty_and_not_empty(self) -> None:
        """empty = true holds for "" and for a missing attribute; false for text."""
        compiled = rule("sasl_username = { empty = false }")
        assert [False, False, True] == [
            hits(compiled),
            hits(compiled, sasl_username=""),
            hits(compiled, sasl_username="alice"),
        ]

    def test_present_tells_sent_empty_from_not_sent(self) -> None:
        """Postfix 3.8 sends compatibility_level; 3.7 does not send it at all."""
        compiled = rule("compatibility_level = { present = true }")
        assert (True, False) == (
            hits(compiled, compatibility_level=""),
            hits(compiled, request="smtpd_access_policy"),
        )

    def test_several_operators_in_one_table_are_anded(self) -> None:
        """`{ gt = 5, lt = 10 }` is a range."""
        compiled = rule("recipient_count = { gt = 5, lt = 10 }")
        assert [False, True, False] == [hits(compiled, recipient_count=n) for n in ("5", "7", "10")]

    def test_different_attributes_are_anded(self) -> None:
        compiled = rule('client_name = "unknown"\nreverse_client_name = "unknown"')
        assert (True, False) == (
            hits(compiled, client_name="unknown", reverse_client_name="unknown"),
            hits(compiled, client_name="unknown", reverse_client_name="x.example"),
        )


class TestRegex:
    def test_search_is_unanchored_and_case_insensitive(self) -> None:
        compiled = rule(r"client_name = { regex = '\.dsl\.' }")
        assert hits(compiled, client_name="host-1.DSL.example.net")

    def test_inline_flag_makes_part_case_sensitive(self) -> None:
        """`(?-i:...)` opts out of case folding for that part."""
        compiled = rule("policy_context = { regex = '^(?-i:MX)$' }")
        assert (True, False) == (
            hits(compiled, policy_context="MX"),
            hits(compiled, policy_context="mx"),
        )

    def test_a_list_of_patterns_is_ored(self) -> None:
        compiled = rule("helo_name = { regex = ['^a', 'z$'] }")
        assert [True, True, False] == [hits(compiled, helo_name=h) for h in ("ab", "yz", "m")]

    def test_padded_value_does_not_match_an_anchored_suffix_past_the_cap(self) -> None:
        """Only the first 1024 characters are searched, so a suffix past them is not seen."""
        compiled = rule(r"helo_name = { regex = '\.trusted\.example$' }")
        long_name = "x" * 2000 + ".trusted.example"
        assert (True, False) == (
            hits(compiled, helo_name="mx.trusted.example"),
            hits(compiled, helo_name=long_name),
        )

    def test_padding_does_not_get_round_a_blocking_pattern(self) -> None:
        """A 5000-character client_name with dyn-1. near its start is still dynamic."""
        compiled = rule(r"client_name = { regex = '(^|[.-])(dyn|dsl)[0-9]*[.-]' }")
        assert (True, False) == (
            hits(compiled, client_name="host.dyn-1." + "a" * 4989),
            hits(compiled, client_name="a" * 1024 + ".dyn-1.example"),
        )

    def test_padding_does_not_make_a_negated_pattern_true(self) -> None:
        """`negate = true` on a padded value that matches in its head stays false."""
        compiled = rule(r"client_name = { regex = '(^|[.-])dyn[0-9]*[.-]', negate = true }")
        assert (False, True) == (
            hits(compiled, client_name="dyn-1.example.net" + "a" * 5000),
            hits(compiled, client_name="mx.example.net" + "a" * 5000),
        )


class TestHostileValues:
    @pytest.mark.parametrize(
        "value",
        [
            "a" * 100_000,
            "\x00\x01\x1b[31m\x7f",
            "bad\udcff\udcfeutf8",
            "\ud800",
            "é" * 5000 + "@" + "ü" * 5000,
            "@@@@",
            "1" * 100_000,
        ],
    )
    def test_every_matcher_answers_without_raising(self, value: str) -> None:
        """Huge, control-character and undecodable values fall through to DEFAULT."""
        compiled = compile_toml(
            """
            [lists.nets]
            type = "network"
            items = ["192.0.2.0/24"]
            [lists.doms]
            type = "domain"
            items = ["example.net"]
            subdomains = true
            [lists.addrs]
            type = "address"
            items = ["a@example.net", "@example.org"]
            [[rules]]
            id = "ALL"
            client_address = { list = "nets" }
            sender_domain = { list = "doms" }
            recipient = { list = "addrs" }
            helo_name = { regex = '^\\d+\\.\\d+$' }
            size = { gt = 5 }
            action = "REJECT"
            """
        )
        attrs = dict.fromkeys(("client_address", "sender", "recipient", "helo_name"), value)
        decision = compiled.decide(PolicyRequest({**attrs, "size": value}), trace=True)
        assert ("DEFAULT", "DUNNO") == (decision.rule, decision.action.line)
