"""Rules with checks on gathered facts: the walk, the facts asked, effects, the sync path.

`AtMost` is a test-only check (a per-sender count that holds once the count
reaches a ceiling, and asks to count one more when it does not) and `Counts`
an in-memory provider for it. They stand in for rate limits, greylisting and
DNS lists, which compile to checks of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.testing import MemoryReactorClock

from postgate.answer import ABSENT, Answer, AnswerStep, Local, settle
from postgate.config.load import Config, DaemonConfig
from postgate.daemon.facts import Gatherer
from postgate.replies.parsing import parse_action
from postgate.rules import Needs, Ruleset
from postgate.rules.match import equals
from postgate.rules.model import Effect, Rule, Verdict
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFER = parse_action("450 4.7.1 Slow down").action
REJECT = parse_action("554 5.7.1 No").action
OK = parse_action("OK").action


@dataclass(frozen=True)
class AtMost:
    ceiling: int

    @property
    def text(self) -> str:
        return f"count at most {self.ceiling}"

    def name(self, request: PolicyRequest) -> str:
        return f"count:{self.ceiling}:{request.get('sender')}"

    def verdict(self, request: PolicyRequest, facts: Mapping[str, object], now: float) -> Verdict:
        name = self.name(request)
        found = facts[name]
        if found is ABSENT:  # discarded by the walk, which gathers it first
            return Verdict(holds=False)
        seen = int(str(found))
        if seen >= self.ceiling:
            return Verdict(holds=True, values={"limit": str(self.ceiling)}, note=f"{seen} seen")
        return Verdict(holds=False, effects=(Effect(name, 1),), note=f"{seen} seen")


@dataclass
class Counts:
    counted: dict[str, int] = field(default_factory=dict)
    through_io: bool = False

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:
        return ABSENT if self.through_io else self.counted.get(name, 0)

    async def fetch(self, name: str, request: PolicyRequest, now: float) -> object:
        return self.counted.get(name, 0)

    def unavailable(self, name: str) -> object:
        return 0

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:
        self.counted[effect.fact] = self.counted.get(effect.fact, 0) + int(str(effect.value))


def sender_is(address: str) -> tuple[object, ...]:
    return (equals("sender", [address], [address]),)


RULESET = Ruleset(
    (
        Rule("TRUSTED", sender_is("boss@example.com"), OK),  # type: ignore[arg-type]
        Rule("FIRST", (), DEFER, checks=(AtMost(2),)),
        Rule("SECOND", (), REJECT, checks=(AtMost(5),)),
    )
)


def config(ruleset: Ruleset = RULESET) -> Config:
    return Config(Path("t.toml"), DaemonConfig(), ruleset)


def mail(sender: str) -> PolicyRequest:
    return PolicyRequest({"request": "smtpd_access_policy", "sender": sender})


class TestWalk:
    def test_a_ruleset_with_a_check_needs_facts_and_one_without_does_not(self) -> None:
        assert (RULESET.needs_facts, Ruleset().needs_facts) == (True, False)

    def test_every_check_still_reachable_is_asked_for_in_one_round(self) -> None:
        needs = RULESET.decide_with(mail("a@example.com"), None, 0.0)
        assert Needs(frozenset({"count:2:a@example.com", "count:5:a@example.com"})) == needs

    def test_a_rule_that_decides_without_facts_asks_for_nothing(self) -> None:
        decision = RULESET.decide_with(mail("boss@example.com"), None, 0.0)
        assert not isinstance(decision, Needs)
        assert "TRUSTED" == decision.rule

    def test_a_check_that_holds_decides_with_its_values_and_effects_of_those_before(
        self,
    ) -> None:
        facts = {"count:2:a@example.com": 3, "count:5:a@example.com": 3}
        decision = RULESET.decide_with(mail("a@example.com"), facts, 0.0, trace=True)
        assert not isinstance(decision, Needs)
        assert ("FIRST", {"limit": "2"}, ()) == (
            decision.rule,
            dict(decision.values),
            decision.effects,
        )
        assert (
            'TRUSTED: failed: sender = "boss@example.com"',
            "FIRST: count at most 2: holds (3 seen)",
            "FIRST: matched -> 450 4.7.1 Slow down",
        ) == decision.trace

    def test_checks_that_do_not_hold_go_on_and_keep_their_effects(self) -> None:
        facts = {"count:2:a@example.com": 1, "count:5:a@example.com": 1}
        decision = RULESET.decide_with(mail("a@example.com"), facts, 0.0)
        assert not isinstance(decision, Needs)
        effects = (Effect("count:2:a@example.com", 1), Effect("count:5:a@example.com", 1))
        assert ("DEFAULT", effects) == (decision.rule, decision.effects)

    def test_facts_are_peeked_once_each_and_only_for_checks_reached(self) -> None:
        asked: list[str] = []

        def peek(request: PolicyRequest, now: float, name: str) -> object:
            asked.append(name)
            return 1

        RULESET.decide_with(mail("boss@example.com"), None, 0.0, peek=peek)
        decision = RULESET.decide_with(mail("a@example.com"), None, 0.0, peek=peek)
        assert ("DEFAULT", ["count:2:a@example.com", "count:5:a@example.com"]) == (
            getattr(decision, "rule", None),
            asked,
        )

    def test_show_names_the_check(self) -> None:
        assert "    FIRST: if count at most 2 -> 450 4.7.1 Slow down" in RULESET.describe()


class TestSettle:
    def test_effects_accumulate_so_the_third_message_is_deferred(self) -> None:
        source = Local({"count": Counts()})
        rules = [settle(config(), mail("a@example.com"), 0.0, source) for _ in range(4)]
        assert ["DEFAULT", "DEFAULT", "FIRST", "FIRST"] == [
            a.rule for a in rules if isinstance(a, Answer)
        ]

    def test_a_provider_that_needs_io_makes_a_strict_source_wait(self) -> None:
        source = Local({"count": Counts(through_io=True)}, strict=True)
        assert isinstance(settle(config(), mail("a@example.com"), 0.0, source), Needs)

    def test_a_lenient_source_takes_the_unavailable_outcome(self) -> None:
        source = Local({"count": Counts(through_io=True)})
        answer = settle(config(), mail("a@example.com"), 0.0, source)
        assert isinstance(answer, Answer)
        assert "DEFAULT" == answer.rule


class TestDaemonStep:
    def test_facts_in_memory_answer_synchronously(self) -> None:
        counts = Counts({"count:2:a@example.com": 2})
        step = AnswerStep(config(), Gatherer({"count": counts}, MemoryReactorClock()), float)
        answer = step.respond(mail("a@example.com"), 0.0)
        assert isinstance(answer, Answer)
        assert b"action=450 4.7.1 Slow down\n\n" == answer.wire

    def test_facts_through_io_give_a_coroutine(self) -> None:
        counts = Counts({"count:2:a@example.com": 2}, through_io=True)
        step = AnswerStep(config(), Gatherer({"count": counts}, MemoryReactorClock()), float)
        pending = step.respond(mail("a@example.com"), 0.0)
        assert not isinstance(pending, Answer)
        pending.close()
