"""The generated decide function: same answers as the step-by-step trace, no config text run."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from postgate.rules.attributes import DERIVED, KNOWN, NUMERIC
from postgate.rules.facts import fold, split_address
from postgate.rules.match import View
from postgate.rules.program import _Writer
from postgate.wire.codec import PolicyRequest
from postgate.wire.policy_files import read_policy_file
from tests.unit.support.rules import ROOT, compile_toml, reference_ruleset, rule_of

RULESET = reference_ruleset()
CASES = read_policy_file(ROOT / "conf" / "examples" / "test_reference.policy")

# Values that hit, nearly hit and miss the reference rules, plus garbage.
VALUES = st.sampled_from(
    [
        "",
        "RCPT",
        "rcpt",
        "DATA",
        "END-OF-MESSAGE",
        "localhost",
        "192.0.2.1",
        "10.1.2.3",
        "203.0.113.9",
        "::ffff:10.0.0.1",
        "2001:db8::1",
        "unknown",
        "dsl-12.pool.example.net",
        "alice@example.com",
        "spamtrap@example.com",
        "x@EXAMPLE.COM.",
        "@",
        "a@b@c",
        "51",
        "128",
        "99999999999999999999999999999999999",
        " 7",
        "AB:CD:EF",
        "é\udcff",
    ]
)
NAMES = st.sampled_from([n for n in KNOWN if n != "request"])


def decide_both(attrs: dict[str, str]) -> tuple[tuple[str, str], tuple[str, str]]:
    request = PolicyRequest({"request": "smtpd_access_policy", **attrs})
    fast = RULESET.decide(request)
    traced = RULESET.decide(request, trace=True)
    return (fast.rule, fast.action.line), (traced.rule, traced.action.line)


class TestSameAnswersAsTheTrace:
    def test_every_reference_case(self) -> None:
        """The generated function and the per-rule trace agree on every recorded request."""
        both = [decide_both(case.request.as_dict()) for case in CASES]
        assert [fast for fast, _ in both] == [traced for _, traced in both]

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(NAMES, VALUES, max_size=12))
    def test_any_request(self, attrs: dict[str, str]) -> None:
        """Shared views computed once at the top give the answers of views computed per test."""
        fast, traced = decide_both(attrs)
        assert traced == fast


class TestViewsAsWritten:
    @settings(max_examples=300, deadline=None)
    @given(NAMES.filter(lambda n: n not in NUMERIC), VALUES)
    def test_folded_key_equals_fold(self, name: str, value: str) -> None:
        """The fold the generator spells out is `facts.fold`, attribute by attribute."""
        writer = _Writer()
        source = writer.view(View("key", name))
        raw = {DERIVED.get(name, name): value}
        namespace: dict[str, Any] = {**writer.namespace, "raw": raw, "get": raw.get}
        local, domain = split_address(value)
        derived = {"_localpart": local, "_domain": domain}.get(name[name.rfind("_") :], value)
        expected = fold(name, derived if name in DERIVED else value)
        assert expected == eval(source, namespace)  # noqa: S307 - the generator's own output


class TestConfigTextIsNeverRun:
    def test_code_in_every_kind_of_value_is_only_compared(self) -> None:
        """Python in ids, values, lists and patterns is data: it matches itself, runs nothing."""
        payload = "x\\\");__import__('os')._exit(3)#"
        compiled = compile_toml(
            f'[lists.evil]\ntype = "string"\nitems = ["{payload}"]\n'
            f'[[rules]]\nid = "A"\nhelo_name = "{payload}"\naction = "REJECT"\n'
            f'[[rules]]\nid = "B"\nsasl_username = {{ list = "evil" }}\naction = "REJECT"\n'
            f'[[rules]]\nid = "C"\nclient_name = {{ regex = "_exit\\\\(3\\\\)" }}\n'
            'action = "REJECT"\n'
        )
        text = "x\");__import__('os')._exit(3)#"
        assert ["A", "B", "C", "DEFAULT"] == [
            rule_of(compiled, helo_name=text),
            rule_of(compiled, sasl_username=text),
            rule_of(compiled, client_name=text),
            rule_of(compiled, helo_name="mx.example.org"),
        ]
