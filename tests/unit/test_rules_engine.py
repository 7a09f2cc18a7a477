"""The engine never raises, whatever the request holds."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postgate.replies.model import Action
from postgate.rules.attributes import POSTFIX
from postgate.wire.codec import PolicyRequest
from tests.unit.support.rules import reference_ruleset, tried_order

RULESET = reference_ruleset()
IDS = set(tried_order(RULESET))

# Text including lone surrogates (what surrogateescape makes of invalid UTF-8).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
escaped = st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape"))
tricky = st.sampled_from(
    [
        "",
        "0",
        "unknown",
        "::ffff:192.0.2.66",
        "198.51.100.1",
        "RCPT",
        "DATA",
        "a@example.com",
        "9" * 50,
    ]
)
values = st.one_of(any_text, escaped, tricky)
names = st.one_of(st.sampled_from(POSTFIX), any_text)


class TestNeverRaises:
    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(names, values, max_size=40), st.booleans())
    def test_arbitrary_requests_get_a_decision(self, attrs: dict[str, str], trace: bool) -> None:
        """Any attribute dict, hostile values included, yields an Action and a known rule id."""
        decision = RULESET.decide(PolicyRequest(attrs), trace=trace)
        assert (True, True) == (isinstance(decision.action, Action), decision.rule in IDS)
