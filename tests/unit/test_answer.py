"""The answer step: pure decisions, and facts gathered from a provider that answers late.

`ScoreRules` is a test-only ruleset that cannot decide without the fact
``test:score``; `DelayedScores` is a provider that answers it after a delay
read from the request, on a `MemoryReactorClock`. Together they stand in for
the stateful and DNS rules to come, and prove the contract of
`postgate.answer` through the real daemon protocol (no sockets).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from structlog.testing import capture_logs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from postgate.answer import ABSENT, Answer, AnswerStep, decide
from postgate.config.load import Config, DaemonConfig
from postgate.daemon.facts import Gatherer
from postgate.daemon.server import Answerer, PolicyFactory
from postgate.replies.model import DUNNO
from postgate.replies.parsing import parse_action
from postgate.rules import Decision, Needs, Ruleset
from postgate.rules.model import Effect
from postgate.wire.codec import PolicyRequest, encode, encode_request

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.daemon.server import PolicyProtocol
    from postgate.rules.engine import Held

REJECT = parse_action("554 5.7.1 Scored too high").action


class ScoreRules(Ruleset):
    """Rejects when the fact ``test:score`` is 3 or more, and says so as an effect."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "needs_facts", True)

    def decide_with(
        self,
        request: PolicyRequest,
        facts: Mapping[str, object] | None,
        now: float,
        *,
        trace: bool = False,
        held: Held | None = None,  # facts at hand: this ruleset always waits for its own
    ) -> Decision | Needs:
        if not facts or "test:score" not in facts:
            return Needs(frozenset({"test:score"}))
        seen = (Effect("test:seen", request.get("recipient")),)
        if int(str(facts["test:score"])) >= 3:
            return Decision(REJECT, "SCORE", ("SCORE: matched",) if trace else (), seen)
        return Decision(DUNNO, "DEFAULT", (), seen)


class DelayedScores:
    """Answers ``test:score`` from ``client_port`` after ``size`` milliseconds."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.asked: list[str] = []
        self.applied: list[tuple[object, float]] = []

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:
        return ABSENT  # always through I/O, so that the Deferred path is taken

    def fetch(self, name: str, request: PolicyRequest, now: float) -> Deferred[object]:
        self.asked.append(request.get("recipient"))
        answer: Deferred[object] = Deferred()
        delay = int(request.get("size") or 0) / 1000
        self.reactor.callLater(delay, answer.callback, request.get("client_port"))
        return answer

    def unavailable(self, name: str) -> object:
        return 0

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:
        self.applied.append((effect.value, round(self.reactor.seconds(), 6)))


def config(**daemon: object) -> Config:
    return Config(Path("t.toml"), replace(DaemonConfig(), **daemon), ScoreRules())  # type: ignore[arg-type]


def request(recipient: str, score: int, delay_ms: int) -> dict[str, str]:
    return {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "recipient": recipient,
        "client_port": str(score),
        "size": str(delay_ms),
    }


def daemon(**settings: object) -> tuple[PolicyFactory, MemoryReactorClock, DelayedScores]:
    reactor = MemoryReactorClock()
    scores = DelayedScores(reactor)
    gatherer = Gatherer({"test": scores}, reactor)
    return PolicyFactory(Answerer(config(**settings), facts=gatherer), reactor), reactor, scores


def connect(factory: PolicyFactory) -> tuple[PolicyProtocol, StringTransport]:
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


REJECTED = encode(REJECT.line)


class TestDecide:
    def test_without_the_fact_the_ruleset_says_what_it_needs(self) -> None:
        needs = decide(config(), PolicyRequest(request("a@x", 5, 0)), 0.0)
        assert Needs(frozenset({"test:score"})) == needs

    def test_with_the_fact_the_answer_is_complete(self) -> None:
        answer = decide(config(), PolicyRequest(request("a@x", 5, 0)), 7.0, {"test:score": 5})
        assert isinstance(answer, Answer)
        expected = ("SCORE", REJECT.line, REJECTED, 7.0, (Effect("test:seen", "a@x"),))
        assert expected == (answer.rule, answer.text, answer.wire, answer.now, answer.effects)

    def test_dry_run_sends_dunno_and_keeps_the_decision(self) -> None:
        answer = decide(
            config(dry_run=True), PolicyRequest(request("a@x", 5, 0)), 0.0, {"test:score": 5}
        )
        assert isinstance(answer, Answer)
        assert (REJECT.line, DUNNO.wire, True) == (answer.text, answer.wire, answer.dry_run)

    def test_a_step_without_a_fact_source_answers_on_error(self) -> None:
        on_error = parse_action("451 4.3.0 Try again later").action
        step = AnswerStep(config(on_error=on_error), None, lambda: 0.0)
        answer = step.respond(PolicyRequest(request("a@x", 5, 0)), 0.0)
        assert not isinstance(answer, Answer)
        finished = Deferred.fromCoroutine(answer)
        result: list[Answer] = []
        finished.addCallback(result.append)
        assert ("ON_ERROR", on_error.line) == (result[0].rule, result[0].text)


class TestDelayedFacts:
    def test_the_reply_waits_for_the_fact_and_uses_it(self) -> None:
        factory, reactor, _ = daemon()
        proto, transport = connect(factory)
        proto.dataReceived(encode_request(request("a@x", 5, 200)))
        reactor.advance(0.199)
        before = transport.value()
        reactor.advance(0.001)
        assert (b"", REJECTED) == (before, transport.value())

    def test_replies_leave_in_request_order_on_one_connection(self) -> None:
        factory, reactor, _ = daemon()
        proto, transport = connect(factory)
        slow, fast, middle = request("1@x", 5, 500), request("2@x", 0, 100), request("3@x", 0, 300)
        proto.dataReceived(b"".join(map(encode_request, (slow, fast, middle))))
        reactor.advance(0.4)
        before = transport.value()
        reactor.advance(0.1)
        assert (b"", REJECTED + DUNNO.wire + DUNNO.wire) == (before, transport.value())

    def test_other_connections_are_answered_while_one_waits(self) -> None:
        factory, reactor, _ = daemon()
        slow_proto, waiting = connect(factory)
        quick_proto, quick = connect(factory)
        slow_proto.dataReceived(encode_request(request("slow@x", 5, 800)))
        quick_proto.dataReceived(encode_request(request("quick@x", 5, 0)))
        reactor.advance(0)
        assert (b"", REJECTED) == (waiting.value(), quick.value())

    def test_a_fact_past_the_deadline_takes_the_configured_outcome(self) -> None:
        factory, reactor, _ = daemon(deadline=0.25)
        proto, transport = connect(factory)
        with capture_logs() as logs:
            proto.dataReceived(encode_request(request("late@x", 5, 5000)))
            reactor.advance(0.25)
        unavailable = [e["provider"] for e in logs if e["event"] == "fact_unavailable"]
        assert (DUNNO.wire, ["test"]) == (transport.value(), unavailable)

    def test_an_outage_is_logged_once_and_its_end_once(self) -> None:
        factory, reactor, _ = daemon(deadline=0.25)
        proto, transport = connect(factory)
        late, timely = request("late@x", 5, 5000), request("timely@x", 5, 10)
        with capture_logs() as logs:
            for attrs in (late, late, late, timely, timely):
                proto.dataReceived(encode_request(attrs))
                reactor.advance(0.25)
        events = [e["event"] for e in logs if e["event"].startswith("fact_")]
        assert ["fact_unavailable", "fact_recovered"] == events
        assert DUNNO.wire * 3 + REJECTED * 2 == transport.value()

    def test_effects_are_applied_once_the_answer_is_decided(self) -> None:
        factory, reactor, scores = daemon()
        proto, transport = connect(factory)
        proto.dataReceived(encode_request(request("a@x", 1, 300)))
        reactor.advance(0.1)
        before = list(scores.applied)
        reactor.advance(0.2)
        assert ([], [("a@x", 0.3)], DUNNO.wire) == (before, scores.applied, transport.value())

    def test_draining_waits_for_an_answer_being_gathered(self) -> None:
        factory, reactor, _ = daemon()
        proto, transport = connect(factory)
        proto.dataReceived(encode_request(request("a@x", 5, 300)))
        drained = factory.drain()
        reactor.advance(0.1)
        waited = (drained.called, transport.disconnecting)
        reactor.advance(0.2)
        assert ((False, False), REJECTED, True) == (
            waited,
            transport.value(),
            transport.disconnecting,
        )
        proto.connectionLost(Failure(ConnectionDone()))
        assert drained.called
