"""The rule engine's data model: rules, groups and the decision they give.

Held apart from `engine` (evaluation, trace, description) and `program` (the
generated walk) so that both import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.replies.model import Action
    from postgate.rules.match import Condition
    from postgate.wire.codec import PolicyRequest

    # What a walk asks for a fact it was not given: the answer step's source
    # (`postgate.answer.FactSource.peek`), with the request and its time.
    Peek = Callable[[PolicyRequest, float, str], object]

DEFAULT_RULE: Final = "DEFAULT"
# The rule id of the `on_error` answer, when deciding raised (daemon and replay alike).
ON_ERROR_RULE: Final = "ON_ERROR"
NO_VALUES: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer, which rule said so, and (on request) how it got there."""

    action: Action
    rule: str
    trace: tuple[str, ...] = ()
    # What is done once the answer is decided (charge a counter, remember a
    # triplet): applied by the answer step's fact source, never by the rules.
    effects: tuple[Effect, ...] = ()
    # Placeholders a check filled for the reply ({limit}, {retry}, {zone}...).
    values: Mapping[str, str] = field(default_factory=lambda: NO_VALUES)
    # What rules in ``mode = "observe"`` would have answered on the way here,
    # in rule order: logged and counted, never sent.
    observed: tuple[Decision, ...] = ()


@dataclass(frozen=True, slots=True)
class Effect:
    """A change a stateful rule asks for; ``fact`` names it as a fact is named."""

    fact: str  # ``provider:detail``: the provider applies it
    value: object = None


@dataclass(frozen=True, slots=True)
class Needs:
    """The facts a ruleset must be given before it can decide this request.

    Returned in place of a `Decision` by a ruleset that reached a rule whose
    conditions read state or DNS answers it was not given; the answer step
    gathers them (docs/architecture.md) and asks again.
    """

    facts: frozenset[str]


class Verdict(NamedTuple):
    """What a check made of its facts: does the rule decide, and what follows."""

    holds: bool
    # Applied whether or not the check holds (a limit under its ceiling still
    # reserves the message): the answer step hands them on after the decision.
    effects: tuple[Effect, ...] = ()
    values: Mapping[str, str] = NO_VALUES  # placeholders for the reply
    note: str = ""  # one line for the trace: the counts or the answers seen


class Check(Protocol):
    """A rule part that reads facts gathered by I/O (a limit, a greylist, a DNS list).

    A rule's checks are consulted only once its plain conditions all hold;
    the rule decides when every check holds. `verdict` reads each fact it
    needs as ``facts[name]`` (``provider:detail``), all of them before it
    branches on any, and decides purely: same request, facts and time, same
    verdict. A fact not at hand reads as `ABSENT`; the walk then discards
    the verdict and gathers what was read (docs/architecture.md, Facts and
    effects), so a verdict must only survive `ABSENT`, not make sense of it.
    """

    @property
    def text(self) -> str:
        """How ``postgate show`` and the trace name the check."""
        ...

    def verdict(
        self, request: PolicyRequest, facts: Mapping[str, object], now: float
    ) -> Verdict: ...


# What a fact not at hand reads as (and what a provider's ``peek`` returns
# for one it cannot give without I/O).
ABSENT: Final = object()


class Facts(dict[str, object]):
    """The facts one walk reads: those given, then what ``peek`` holds in memory.

    A dict, so that a fact already read costs a plain lookup; only a first
    read calls ``peek(request, now, name)``. The names that were not at hand
    are kept in `missing`: the answer step gathers them, all at once, before
    deciding.
    """

    __slots__ = ("missing", "now", "peek", "request")

    def __init__(
        self,
        given: Mapping[str, object],
        peek: Peek | None,
        request: PolicyRequest,
        now: float,
    ) -> None:
        super().__init__(given)
        self.peek, self.request, self.now = peek, request, now
        self.missing: set[str] = set()

    def __missing__(self, name: str) -> object:
        peek = self.peek
        value = ABSENT if peek is None else peek(self.request, self.now, name)
        if value is ABSENT:
            self.missing.add(name)
        else:
            self[name] = value
        return value


@dataclass(frozen=True, slots=True)
class Rule:
    """Conditions (all must hold), checks on gathered facts, and the action that then decides."""

    id: str
    conditions: tuple[Condition, ...]
    action: Action
    shortcut: str = ""
    checks: tuple[Check, ...] = ()
    # mode = "observe": when the rule would decide, the walk notes its
    # decision in `Decision.observed` and goes on to the next rule.
    observe: bool = False
    # Built once here so that deciding allocates nothing for the answer.
    decision: Decision = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decision", Decision(self.action, self.id))


@dataclass(frozen=True, slots=True)
class Group:
    """Shared conditions over child rules, with an optional closing default."""

    id: str
    conditions: tuple[Condition, ...]
    children: tuple[Rule | Group, ...]
    default: Action | None = None
    # mode = "observe": a decision inside the group (or its default) is
    # noted, not answered, and the walk goes on after the group.
    observe: bool = False
    decision: Decision | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        default = None if self.default is None else Decision(self.default, self.id)
        object.__setattr__(self, "decision", default)


Node = Rule | Group
