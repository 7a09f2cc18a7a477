"""DNS lists offline: the [dns] table, query names, answers, weights, scores and replies.

Decisions go through the answer step with the providers replay uses
(`state.local_providers`: the ``[dns.answers]`` table), so these are the
decisions ``postgate replay`` and ``postgate test`` make.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from postgate.answer import Answer, Local, settle
from postgate.commands.cli import main
from postgate.config.dns import DnsList, parse_dns, parse_server
from postgate.config.load import load_config
from postgate.config.problems import ConfigError, Problems
from postgate.replies.parsing import parse_action
from postgate.rules.dnsbl import NOT_LISTED, fact_name, reversed_address
from postgate.rules.model import ABSENT, Needs
from postgate.state import local_providers
from postgate.wire.codec import PolicyRequest
from tests.support.dns_lists import LISTS as SHARED_LISTS

if TYPE_CHECKING:
    from postgate.config.load import Config

LISTS = (
    """
[dns]
servers = ["127.0.0.1:5353"]
"""
    + SHARED_LISTS
    + """
[dns.answers]
"2.0.0.127.zen.example" = { a = ["127.0.0.2"], txt = "https://zen.example/q/127.0.0.2" }
"10.2.0.192.zen.example" = ["127.0.0.10"]
"11.2.0.192.zen.example" = ["127.0.0.11", "127.0.0.4"]
"11.2.0.192.wl.example" = ["127.0.2.3"]
"bad.example.dbl.example" = ["127.0.1.2"]
"b.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example" = ["127.0.0.3"]
"12.2.0.192.zen.example" = "servfail"
"13.2.0.192.zen.example" = ["127.255.255.254"]
"""
)

RULES = """
[[rules]]
id = "SCORE"
dnsbl_score = { ge = 3 }
reply = "dnsbl_listed"

[[rules]]
id = "SOME"
dnsbl_score = { ge = 1 }
action = "450 4.7.1 score {dnsbl_score}"

[[rules]]
id = "FAILED"
dnsbl = { failed = "zen" }
reply = "dnsbl_lookup_failed"
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "postgate.toml"
    path.write_text(text)
    return load_config(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [f"{p.place}: {p.reason}" for p in caught.value.errors]


def mail(
    client: str = "192.0.2.1", sender: str = "a@ok.example", helo: str = "mx.ok.example"
) -> PolicyRequest:
    return PolicyRequest(
        {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "client_address": client,
            "sender": sender,
            "helo_name": helo,
            "client_name": "unknown",
        }
    )


def answer(config: Config, request: PolicyRequest) -> Answer:
    found = settle(config, request, 0.0, Local(local_providers(config)), trace=True)
    assert isinstance(found, Answer)
    return found


class TestQueryNames:
    def test_ipv4_is_reversed_and_ipv6_nibble_reversed(self) -> None:
        assert "1.2.0.192" == reversed_address("192.0.2.1")
        assert (
            "b.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
            == reversed_address("2001:db8::4567:89ab")
        )
        assert "1.2.0.192" == reversed_address("::ffff:192.0.2.1")
        assert reversed_address("unknown") is None

    @pytest.mark.parametrize(
        ("query", "request_attrs", "expected"),
        [
            ("client_address", {"client_address": "192.0.2.1"}, "dns:bl.example:1.2.0.192"),
            ("sender_domain", {"sender": "x@Spam.Example."}, "dns:bl.example:spam.example"),
            ("sender_domain", {"sender": ""}, None),
            ("helo_name", {"helo_name": "[192.0.2.1]"}, None),
            ("helo_name", {"helo_name": "192.0.2.1"}, None),
            ("client_name", {"client_name": "unknown"}, None),
            (
                "reverse_client_name",
                {"reverse_client_name": "h.example"},
                "dns:bl.example:h.example",
            ),
            ("helo_name", {"helo_name": "a" * 250}, None),
        ],
    )
    def test_fact_names(
        self, query: str, request_attrs: dict[str, str], expected: str | None
    ) -> None:
        dns_list = DnsList("x", "bl.example", query)
        assert expected == fact_name(dns_list, PolicyRequest(request_attrs))


class TestConfig:
    def test_defaults_and_servers(self) -> None:
        config = parse_dns({"servers": ["127.0.0.1:5353", "[::1]:53", "::1"]}, 1.0, Problems("f"))
        assert ((("127.0.0.1", 5353), ("::1", 53), ("::1", 53)), 0.8) == (
            config.servers,
            config.deadline,
        )
        assert parse_server("ns.example") is None

    def test_the_dns_deadline_cannot_outlast_the_daemon_deadline(self, tmp_path: Path) -> None:
        found = errors(tmp_path, "[daemon]\ndeadline = 0.5\n[dns]\ndeadline = 1.5\n")
        assert ["dns.deadline: 1.5 s exceeds daemon.deadline (0.5 s)"] == [
            e.split(", which")[0] for e in found
        ]

    def test_the_default_deadline_fits_a_short_daemon_deadline(self, tmp_path: Path) -> None:
        assert 0.3 == load(tmp_path, "[daemon]\ndeadline = 0.3\n[dns]\n").dns.deadline

    def test_every_mistake_is_reported_at_its_place(self, tmp_path: Path) -> None:
        found = errors(
            tmp_path,
            """
[dns]
servers = ["ns.example"]
cache_sise = 5
min_ttl = 100
max_ttl = 10
[dns.lists.a]
zone = "not a zone"
query = "recipient"
answers = ["127.0.0.[9..2]", "127.0.0"]
weight = 1.5
[dns.lists.b]
zone = "b.example"
answers = ["127.0.0.2"]
mask = "0.0.0.0"
[[rules]]
id = "R"
dnsbl = "zem"
action = "REJECT"
[[rules]]
id = "S"
dnsbl_score = { gte = 3 }
action = "REJECT"
""",
        )
        places = [e.split(":")[0] for e in found]
        assert [
            "dns.cache_sise",
            "dns.min_ttl",
            "dns.servers[0]",
            "dns.lists.a.zone",
            "dns.lists.a.answers[0]",
            "dns.lists.a.answers[1]",
            "dns.lists.a.query",
            "dns.lists.a.weight",
            "dns.lists.b.mask",
            "rules[0].dnsbl",
            "rules[1].dnsbl_score.gte",
        ] == places
        assert "did you mean 'cache_size'?" in found[0]
        assert "one of gt, ge, lt, le, eq, ne" in found[-1]

    def test_old_feature_keys_are_no_longer_refused_as_planned(self, tmp_path: Path) -> None:
        found = errors(
            tmp_path, LISTS + '[[rules]]\nid = "R"\ndnsbl = "zen"\nrbl = 1\naction = "REJECT"\n'
        )
        assert ["rules[0].rbl"] == [e.split(":")[0] for e in found]


class TestDecisions:
    def test_listed_over_the_threshold_gets_postfix_reject_rbl_client_wording(
        self, tmp_path: Path
    ) -> None:
        config = load(tmp_path, LISTS + RULES)
        found = answer(config, mail("127.0.0.2"))
        assert (
            "SCORE",
            (
                b"action=554 5.7.1 Service unavailable; Client host [127.0.0.2] "
                b"blocked using zen.example; https://zen.example/q/127.0.0.2\n\n"
            ),
        ) == (
            found.rule,
            found.wire,
        )

    def test_no_txt_leaves_the_reason_out(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        found = answer(config, mail("192.0.2.10"))  # zen 3 + pbl 1
        assert b"blocked using zen.example\n\n" in found.wire
        assert "score 4, zen +3, pbl +1" in "\n".join(found.trace)

    def test_an_allow_list_subtracts(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        found = answer(config, mail("192.0.2.11"))  # zen 3 + pbl 1 - wl 4
        assert ("DEFAULT", "score 0, zen +3, pbl +1, wl -4") == (
            found.rule,
            next(line for line in found.trace if "score 0" in line).split("(")[1].rstrip(")"),
        )

    def test_rhsbl_on_sender_domain_and_helo(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        found = answer(config, mail(sender="x@bad.example", helo="bad.example"))
        assert ("SCORE", True) == (
            found.rule,
            b"Sender address [bad.example] blocked using dbl.example" in found.wire,
        )
        one = answer(config, mail(helo="bad.example"))
        assert b"action=450 4.7.1 score 1\n\n" == one.wire

    def test_ipv6_client(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        assert "SCORE" == answer(config, mail("2001:db8::4567:89ab")).rule

    def test_unlisted_client_goes_through(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        assert "DEFAULT" == answer(config, mail("192.0.2.99")).rule

    def test_a_failed_lookup_counts_as_unlisted_and_can_be_tested(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        found = answer(config, mail("192.0.2.12"))
        assert (
            "FAILED",
            b"action=DEFER_IF_PERMIT 4.7.1 DNSBL lookup failed, try again later\n\n",
        ) == (found.rule, found.wire)

    def test_a_refusal_code_is_no_listing(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        assert "FAILED" == answer(config, mail("192.0.2.13")).rule

    def test_on_failure_listed(self, tmp_path: Path) -> None:
        text = LISTS.replace("weight = 3\n", 'weight = 3\non_failure = "listed"\n', 1)
        config = load(tmp_path, text + RULES)
        assert "SCORE" == answer(config, mail("192.0.2.12")).rule

    def test_listed_unlisted_conditions(self, tmp_path: Path) -> None:
        rules = """
[[rules]]
id = "WL"
dnsbl = { unlisted = ["wl"] }
dnsbl = "zen"
action = "554 5.7.1 on {dnsbl_zone}"
"""
        config = load(tmp_path, LISTS + rules.replace('dnsbl = { unlisted = ["wl"] }\n', ""))
        assert b"action=554 5.7.1 on zen.example\n\n" == answer(config, mail("192.0.2.10")).wire
        rules = '[[rules]]\nid = "N"\ndnsbl = { unlisted = "wl" }\naction = "OK"\n'
        config = load(tmp_path, LISTS + rules)
        assert ("DEFAULT", "N") == (
            answer(config, mail("192.0.2.11")).rule,
            answer(config, mail("192.0.2.10")).rule,
        )

    def test_only_lists_the_rules_can_reach_are_asked(self, tmp_path: Path) -> None:
        rules = (
            '[[rules]]\nid = "LOCAL"\nclient_address = "192.0.2.1"\naction = "OK"\n'
            '[[rules]]\nid = "Z"\ndnsbl = "zen"\naction = "REJECT"\n'
            '[[rules]]\nid = "D"\ndnsbl = "dbl"\naction = "REJECT"\n'
        )
        config = load(tmp_path, LISTS + rules)
        assert config.ruleset.decide_with(mail("192.0.2.1"), None, 0.0).rule == "LOCAL"  # type: ignore[union-attr]
        needs = config.ruleset.decide_with(mail("192.0.2.7"), None, 0.0)
        assert {"dns:zen.example:7.2.0.192", "dns:dbl.example:ok.example"} == needs.facts  # type: ignore[union-attr]


class TestPlaceholders:
    def test_without_a_check_they_read_as_postfix_would_word_them(self) -> None:
        text = "{dnsbl_what} on {dnsbl_zone}{dnsbl_reason}/{dnsbl_text}/{dnsbl_score}"
        rendered = parse_action("WARN " + text).action.render(mail(), "R")
        assert "WARN Client host [192.0.2.1] on unknown/unknown/unknown" == rendered

    def test_a_check_fills_them(self) -> None:
        values = {
            "dnsbl_zone": "z.example",
            "dnsbl_reason": "",
            "dnsbl_text": "",
            "dnsbl_score": "4",
        }
        rendered = parse_action("WARN {dnsbl_zone}{dnsbl_reason}/{dnsbl_score}").action.render(
            mail(), "R", values
        )
        assert "WARN z.example/4" == rendered


class TestDocs:
    def test_the_rules_page_example_loads_and_decides_as_it_says(self, tmp_path: Path) -> None:
        page = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
        section = page.split("\n## DNS lists\n", 1)[1].split("\n## ", 1)[0]
        blocks = re.findall(r"^```toml\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
        config = load(tmp_path, blocks[1] + blocks[0])
        listed = answer(config, mail("127.0.0.2"))
        assert (
            b"action=554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
            b"zen.spamhaus.org; listed for a test\n\n"
        ) == listed.wire
        assert b"Listed with score 1;" in answer(config, mail("192.0.2.10")).wire
        assert "DEFAULT" == answer(config, mail("192.0.2.3")).rule  # failed: unlisted


class TestShow:
    def test_show_lists_what_each_list_asks_and_counts(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text(LISTS + RULES)
        assert 0 == main(["show", "-c", str(path)])
        shown = capsys.readouterr().out.splitlines()
        at = shown.index("dns lists:")
        expected = [
            "dbl: dbl.example asked about sender_domain, any 127/8 answer count, weight +2",
            "helo: dbl.example asked about helo_name, any 127/8 answer count, weight +1",
            "pbl: zen.example asked about client_address, answers 127.0.0.[10;11] count, weight +1",
            (
                "wl: wl.example asked about client_address, answers with a bit of 0.0.0.2 count, "
                "weight -4"
            ),
            "zen: zen.example asked about client_address, answers 127.0.0.[2..11] count, weight +3",
        ]
        assert [f"    {line}" for line in expected] == shown[at + 1 : at + 6]


class TestOneWalk:
    def test_facts_at_hand_decide_in_the_first_walk(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        asked: list[str] = []

        def held(_request: PolicyRequest, _now: float, name: str) -> object:
            asked.append(name)
            return NOT_LISTED

        decision = config.ruleset.decide_with(mail("192.0.2.99"), None, 0.0, peek=held)
        assert "DEFAULT" == getattr(decision, "rule", None)
        assert sorted(set(asked)) == sorted(asked)  # each name peeked once, in one walk

    def test_facts_not_at_hand_are_named_for_gathering(self, tmp_path: Path) -> None:
        config = load(tmp_path, LISTS + RULES)
        needs = config.ruleset.decide_with(mail("192.0.2.99"), None, 0.0, peek=lambda *_: ABSENT)
        assert isinstance(needs, Needs)
        assert "dns:zen.example:99.2.0.192" in needs.facts

    def test_facts_peeked_before_a_missing_one_are_named_with_it(self, tmp_path: Path) -> None:
        def only_zen(_request: PolicyRequest, _now: float, name: str) -> object:
            return ABSENT if "dbl" in name else NOT_LISTED

        rules = '[[rules]]\nid = "Z"\ndnsbl = "zen"\naction = "REJECT"\n'
        rules += '[[rules]]\nid = "D"\ndnsbl = "dbl"\naction = "REJECT"\n'
        config = load(tmp_path, LISTS + rules)
        needs = config.ruleset.decide_with(mail("192.0.2.99"), None, 0.0, peek=only_zen)
        assert isinstance(needs, Needs)
        assert {"dns:zen.example:99.2.0.192", "dns:dbl.example:ok.example"} == needs.facts

    def test_rules_after_the_last_check_decide_alike_with_and_without_a_trace(
        self, tmp_path: Path
    ) -> None:
        rules = (
            '[[rules]]\nid = "Z"\ndnsbl = "zen"\naction = "REJECT"\n'
            '[[rules]]\nid = "HELO"\nhelo_name = "bad.example"\naction = "550 5.7.1 HELO"\n'
            '[[rules]]\nid = "G"\nsender_domain = "ok.example"\nrules = [\n'
            '  { id = "IN", client_address = "192.0.2.7", action = "OK" },\n]\n'
            'default = "450 4.7.1 later"\n'
        )
        config = load(tmp_path, LISTS + rules)
        assert 1 == config.ruleset.tail[0]
        for request in (mail(), mail("192.0.2.7"), mail(helo="bad.example"), mail(sender="")):
            fast = settle(config, request, 0.0, Local(local_providers(config)))
            traced = answer(config, request)
            assert isinstance(fast, Answer)
            assert (traced.rule, traced.wire) == (fast.rule, fast.wire)
        assert "G" == answer(config, mail()).rule
