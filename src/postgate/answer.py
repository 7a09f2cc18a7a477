"""The answer step: a request, the configuration and the time in; the whole answer out.

The daemon, ``postgate replay``, ``diff``, ``test`` and the pytest plugin all
answer through this module, so they cannot disagree. It imports nothing from
Twisted and reads no clock of its own. The contract, which stateful rules
(rate limits, greylisting) and DNS lists build on:

* `decide` is pure: the same configuration, request, facts and time give the
  same `Answer`. It does no I/O and never raises. When the rules raise, the
  answer is ``daemon.on_error`` under the rule id ``ON_ERROR``, with the
  exception kept for the log; under ``daemon.dry_run`` the wire bytes are
  ``DUNNO``'s while the answer still says what was decided.
* Facts that need I/O (counters, greylist entries, DNS answers) are never
  fetched by the rules. A ruleset that reaches a rule needing facts it was not
  given returns `Needs`, naming them; `AnswerStep.respond` asks its
  `FactSource` for all of them at once, within what is left of
  ``daemon.deadline`` (the source puts each provider's configured outcome in
  place of a fact that failed or came late), and decides again with them.
* Effects (charge a counter, remember a triplet) come back in
  `Answer.effects` and are handed to the source after the decision, never
  before it.
* A ruleset that needs no facts is decided in one synchronous call:
  `respond` returns the `Answer` itself, so the daemon's hot path costs what a
  bare rules call costs. So is one whose facts are all at hand without
  waiting (the embedded state store, a DNS answer in the cache): each
  `FactProvider` can ``peek``, and `settle` decides with what they hold. Only
  when a fact needs I/O does `respond` return a coroutine, which the daemon
  runs as a Deferred while it still sends replies in request order on each
  connection (`postgate.daemon.server`).
* ``replay``, ``diff`` and ``test`` use `settle` with `Local` providers on
  the recording's virtual clock: the same decisions, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from postgate.replies.model import DUNNO
from postgate.rules.model import ABSENT, ON_ERROR_RULE, Needs
from postgate.wire.codec import encode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Mapping
    from typing import Any

    from postgate.config.load import Config
    from postgate.replies.model import Action
    from postgate.rules.model import Decision, Effect, Peek
    from postgate.wire.codec import PolicyRequest

_new: Final = tuple.__new__

# A ruleset asks for facts at most once per rule that reads them; more rounds
# than this means a rule keeps asking for facts it was given.
MAX_ROUNDS: Final = 8


class Answer(NamedTuple):
    """Everything about one answer (a tuple: built once per request on the hot path)."""

    rule: str
    action: Action  # as configured: the deciding rule's, or ``on_error``'s
    text: str  # what follows ``action=``, templates filled: what was decided
    wire: bytes  # what is sent: ``DUNNO``'s under dry_run
    now: float
    dry_run: bool = False
    trace: tuple[str, ...] = ()
    error: BaseException | None = None
    effects: tuple[Effect, ...] = ()
    # What rules in mode = "observe" would have answered: logged, counted, not sent.
    observed: tuple[Decision, ...] = ()


class FactProvider(Protocol):
    """One kind of fact: rate-limit state, greylist entries, a DNS list.

    A fact's name is ``provider:detail`` (``limit:HOURLY:alice``); the part
    before the colon picks the provider.
    """

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:
        """The fact if it is at hand (memory, a cache), else `ABSENT`; never blocks."""
        ...

    def fetch(self, name: str, request: PolicyRequest, now: float) -> Awaitable[object]:
        """The fact through I/O (the daemon only)."""
        ...

    def unavailable(self, name: str) -> object:
        """The configured outcome when ``name`` failed or came too late."""
        ...

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None: ...


class FactSource(Protocol):
    """Where facts come from, and where effects go.

    The daemon's source (`postgate.daemon.facts`) asks providers in parallel
    under a timer; replay's (`Local`) answers from memory on a virtual clock.
    """

    def peek(self, request: PolicyRequest, now: float, name: str) -> object:
        """The fact if it is at hand, else `ABSENT` (then `gather`)."""
        ...

    def gather(
        self, names: frozenset[str], request: PolicyRequest, now: float, budget: float
    ) -> Awaitable[Mapping[str, object]]:
        """Every fact named, a configured outcome standing in for any not had in ``budget`` s."""
        ...

    def apply(self, effects: tuple[Effect, ...], request: PolicyRequest, now: float) -> None: ...


class Local:
    """Providers that answer at once: replay's source, and the daemon's peek.

    Under ``strict``, a fact a provider cannot peek is `ABSENT` (the daemon
    then gathers it); otherwise it takes the provider's ``unavailable``
    outcome, which is what a replay without I/O must do.
    """

    def __init__(self, providers: Mapping[str, FactProvider], *, strict: bool = False) -> None:
        self.providers = providers
        self.strict = strict

    def peek(self, request: PolicyRequest, now: float, name: str) -> object:
        provider = self.providers[name[: name.find(":")]]  # an unowned name is a rule bug
        value = provider.peek(name, request, now)
        if value is ABSENT and not self.strict:
            return provider.unavailable(name)
        return value

    async def gather(
        self,
        names: frozenset[str],
        request: PolicyRequest,
        now: float,
        budget: float,  # noqa: ARG002 - nothing here waits
    ) -> Mapping[str, object]:
        local = Local(self.providers)
        return {name: local.peek(request, now, name) for name in names}

    def apply(self, effects: tuple[Effect, ...], request: PolicyRequest, now: float) -> None:
        for effect in effects:
            self.providers[effect.fact.partition(":")[0]].apply(effect, request, now)


def decide(
    config: Config,
    request: PolicyRequest,
    now: float,
    facts: Mapping[str, object] | None = None,
    *,
    trace: bool = False,
    peek: Peek | None = None,
) -> Answer | Needs:
    """Decide ``request`` under ``config`` at ``now``: pure, total, I/O-free.

    ``peek`` (from `settle`) hands the walk facts held in memory as it reads
    them, so that a warm cache costs one walk, not two.
    """
    ruleset = config.ruleset
    try:
        decision = (
            ruleset.program(request.raw)
            if facts is None and not trace and not ruleset.needs_facts
            else ruleset.decide_with(request, facts, now, trace=trace, peek=peek)
        )
        if isinstance(decision, Needs):
            return decision
        rule, action = decision.rule, decision.action
        text = action.sent or action.render(request, rule, decision.values)
        wire = action.wire or encode(text)
    except Exception as exc:  # noqa: BLE001 - a rule bug must still get an answer
        return failed(config, request, now, exc)
    # tuple.__new__ directly: NamedTuple's own constructor is a Python call,
    # and this runs once per request.
    steps, effects, observed = decision.trace, decision.effects, decision.observed
    if config.daemon.dry_run:
        return _new(
            Answer, (rule, action, text, DUNNO.wire, now, True, steps, None, effects, observed)
        )
    return _new(Answer, (rule, action, text, wire, now, False, steps, None, effects, observed))


def failed(config: Config, request: PolicyRequest, now: float, error: BaseException) -> Answer:
    """The ``on_error`` answer, for rules that raised or facts that never settled."""
    action = config.daemon.on_error
    text = action.render(request, ON_ERROR_RULE)
    dry_run = config.daemon.dry_run
    wire = DUNNO.wire if dry_run else encode(text)
    step = (f"evaluation failed: {error!r}",)
    return Answer(ON_ERROR_RULE, action, text, wire, now, dry_run, step, error)


def settle(
    config: Config,
    request: PolicyRequest,
    now: float,
    source: FactSource,
    *,
    trace: bool = False,
) -> Answer | Needs:
    """Decide with facts the source has at hand, and apply the effects; no waiting.

    Returns `Needs` when the source would have to wait (the daemon then
    gathers); `replay` gives a source that never waits.
    """
    answer = decide(config, request, now, trace=trace, peek=source.peek)
    return _applied(answer, source, request, now) if isinstance(answer, Answer) else answer


def _applied(answer: Answer, source: FactSource, request: PolicyRequest, now: float) -> Answer:
    if not answer.effects:
        return answer
    try:
        source.apply(answer.effects, request, now)
    except Exception as exc:  # noqa: BLE001 - the decision stands; the log says
        return answer._replace(error=exc)
    return answer


class AnswerStep:
    """The configuration a reload swaps, and the source of the facts rules need.

    A request sees either the old or the new configuration, never a mixture:
    `respond` reads the reference once.
    """

    def __init__(
        self, config: Config, facts: FactSource | None, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.facts = facts
        self._clock = clock  # monotonic seconds, for what is left of the deadline

    def respond(self, request: PolicyRequest, now: float) -> Answer | Coroutine[Any, Any, Answer]:
        config = self.config
        if not config.ruleset.needs_facts or self.facts is None:
            answer = decide(config, request, now)
        else:
            answer = settle(config, request, now, self.facts)
        if isinstance(answer, Answer):
            return answer
        return self._gathered(config, request, now, answer)

    async def _gathered(
        self, config: Config, request: PolicyRequest, now: float, needs: Needs
    ) -> Answer:
        facts: dict[str, object] = {}
        started = self._clock()
        for _ in range(MAX_ROUNDS):
            missing = needs.facts - facts.keys()
            if self.facts is None or not missing:
                return failed(config, request, now, LookupError(f"facts {sorted(needs.facts)}"))
            budget = config.daemon.deadline - (self._clock() - started)
            try:
                facts.update(await self.facts.gather(missing, request, now, max(budget, 0.0)))
            except Exception as exc:  # noqa: BLE001 - a source that breaks its contract
                return failed(config, request, now, exc)
            answer = decide(config, request, now, facts, peek=self.facts.peek)
            if isinstance(answer, Answer):
                return _applied(answer, self.facts, request, now)
            needs = answer
        return failed(config, request, now, LookupError("facts never settled"))


__all__ = [
    "ABSENT",
    "Answer",
    "AnswerStep",
    "FactProvider",
    "FactSource",
    "Local",
    "decide",
    "failed",
    "settle",
]
