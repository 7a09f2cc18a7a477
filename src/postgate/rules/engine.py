"""First-match evaluation of compiled rules into a `Decision`.

Pure and synchronous: no I/O, no clock, nothing from Twisted. A request
walks the rules in order; the first rule whose conditions all hold decides,
a group whose conditions hold walks its children and may end with its own
default, and when nothing decides the implicit default is ``DUNNO`` (Postfix
then goes on with its own restrictions; docs/protocol.md, The action words). The walk
itself is one generated function (`postgate.rules.program`); the objects
here describe the rules, show them and explain a decision step by step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from postgate.replies.model import DUNNO
from postgate.rules.model import DEFAULT_RULE, Decision, Facts, Needs, Rule
from postgate.rules.program import build, walk

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.replies.model import Action
    from postgate.rules.lists import NamedList
    from postgate.rules.match import Condition
    from postgate.rules.model import Check, Effect, Group, Node, Peek
    from postgate.rules.program import FirstFailing, Program
    from postgate.wire.codec import PolicyRequest

_INDENT: Final = "    "
_NO_FACTS: Final[Mapping[str, object]] = MappingProxyType({})


class _Walk:
    """One interpreted walk: the trace, and rules whose checks read facts.

    The generated `program` cannot wait for facts, so a ruleset with checks
    (and every traced decision) is walked here instead, with the generated
    per-node condition helpers. Checks read their facts from `Facts`; once
    one was not at hand, the walk goes on only so that the checks it could
    still reach name theirs too, and they are all gathered in one round; it
    stops at a node that would decide without facts, since nothing after it
    can matter.
    """

    __slots__ = (
        "effects",
        "facts",
        "failing",
        "given",
        "lines",
        "now",
        "observed",
        "peek",
        "raw",
        "request",
        "tail",
    )

    def __init__(
        self,
        request: PolicyRequest,
        given: Mapping[str, object],
        peek: Peek | None,
        now: float,
        ruleset: Ruleset,
        lines: list[str] | None,
    ) -> None:
        self.request, self.raw, self.now = request, request.raw, now
        self.failing, self.lines = ruleset.failing, lines
        # Made when a check is first reached: a request that reaches none
        # (its plain conditions fail first) costs no more than that.
        self.given, self.peek = given, peek
        self.facts: Facts | None = None
        # (index, program): the top-level rules from index on have no checks,
        # so outside a trace the generated program decides them at its speed.
        self.tail = ruleset.tail if lines is None else (-1, None)
        self.effects: list[Effect] = []
        self.observed: list[Decision] = []

    def say(self, depth: int, text: str) -> None:
        if self.lines is not None and (self.facts is None or not self.facts.missing):
            self.lines.append(f"{_INDENT * depth}{text}")

    def nodes(self, nodes: tuple[Node, ...], depth: int) -> Decision | None:
        start, program = self.tail if depth == 0 else (-1, None)
        for index, node in enumerate(nodes):
            if index == start and program is not None:
                waiting = self.facts is not None and self.facts.missing
                return None if waiting else program(self.raw)  # no facts past here
            failed = self.failing[node.id](self.raw)
            if failed >= 0:
                if self.lines is not None:  # the text is built only for a trace
                    self.say(depth, f"{node.id}: failed: {node.conditions[failed].text}")
                continue
            found = self.rule(node, depth) if isinstance(node, Rule) else self.group(node, depth)
            if found is not None:
                return found
        return None

    def rule(self, rule: Rule, depth: int) -> Decision | None:
        checks = rule.checks
        if not checks:
            return self.decided(rule, rule.decision, depth)
        request, facts, now = self.request, self.facts, self.now
        if facts is None:
            facts = self.facts = Facts(self.given, self.peek, request, now)
        verdicts = [check.verdict(request, facts, now) for check in checks]
        if facts.missing:  # a fact was not at hand: gather before deciding
            return None
        values: Mapping[str, str] = {}
        holds = True
        for check, verdict in zip(checks, verdicts, strict=True):
            if verdict.effects:
                self.effects += verdict.effects
            if verdict.values:
                values = {**values, **verdict.values}
            if self.lines is not None:
                said = ("holds" if verdict.holds else "does not hold") + (
                    f" ({verdict.note})" if verdict.note else ""
                )
                self.say(depth, f"{rule.id}: {check.text}: {said}")
            holds = holds and verdict.holds
        if not holds:
            return None
        return self.decided(rule, Decision(rule.action, rule.id, (), (), values), depth)

    def decided(self, rule: Rule, decision: Decision, depth: int) -> Decision | None:
        if rule.observe:
            self.say(depth, f"{rule.id}: matched, observed (not answered) -> {rule.action.line}")
            self.observed.append(decision)
            return None
        if self.lines is not None:  # the text is built only for a trace
            self.say(depth, f"{rule.id}: matched -> {rule.action.line}")
        return decision

    def group(self, group: Group, depth: int) -> Decision | None:
        if self.lines is not None:
            self.say(depth, f"{group.id}: group matched, trying its rules")
        found = self.nodes(group.children, depth + 1)
        if found is None and group.decision is not None:
            line = group.decision.action.line
            self.say(depth, f"{group.id}: no rule in the group decided -> default {line}")
            found = group.decision
        if found is None:
            self.say(depth, f"{group.id}: no rule in the group decided, going on")
        elif group.observe:
            self.say(depth, f"{group.id}: observed (not answered), going on after the group")
            self.observed.append(found)
            return None
        return found


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Compiled rules in order, and the lists they read."""

    nodes: tuple[Node, ...] = ()
    lists: Mapping[str, NamedList] = field(default_factory=dict)
    default: Action = DUNNO
    default_decision: Decision = field(init=False, repr=False, compare=False)
    # The rules as one generated function (`program`), and its trace helpers.
    program: Program = field(init=False, repr=False, compare=False)
    failing: Mapping[str, FirstFailing] = field(init=False, repr=False, compare=False)
    source: str = field(init=False, repr=False, compare=False)  # for `postgate show --python`
    # Both are logged on every status report and reload: compute them once.
    rule_count: int = field(init=False, repr=False, compare=False)
    digest: str = field(init=False, repr=False, compare=False)
    # True when a rule has checks that read facts needing I/O (state, DNS),
    # which the answer step must gather before deciding.
    needs_facts: bool = field(init=False, repr=False, compare=False)
    tail: tuple[int, Program | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_decision", Decision(self.default, DEFAULT_RULE))
        object.__setattr__(self, "digest", self._digest())  # names the generated source
        program, failing, source = build(self.nodes, self.default_decision, self.digest)
        object.__setattr__(self, "program", program)
        object.__setattr__(self, "failing", failing)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "rule_count", sum(1 for _ in walk(self.nodes)))
        checked = any(isinstance(n, Rule) and n.checks for n in walk(self.nodes))
        object.__setattr__(self, "needs_facts", checked)
        object.__setattr__(self, "tail", self._tail() if checked else (-1, None))

    def _tail(self) -> tuple[int, Program | None]:
        """The generated walk of the top-level rules after the last one with checks."""
        last = max(
            i
            for i, node in enumerate(self.nodes)
            if any(isinstance(n, Rule) and n.checks for n in walk((node,)))
        )
        if last + 1 >= len(self.nodes):
            return -1, None
        tail, _, _ = build(self.nodes[last + 1 :], self.default_decision, f"{self.digest}-tail")
        return last + 1, tail

    def decide(self, request: PolicyRequest, *, trace: bool = False) -> Decision:
        """Decide a ruleset without checks (a ruleset with checks needs `decide_with`)."""
        if not trace and not self.needs_facts:
            return self.program(request.raw)
        found = self.decide_with(request, _NO_FACTS, 0.0, trace=trace)
        if isinstance(found, Needs):
            raise LookupError(f"this ruleset needs facts: {sorted(found.facts)}")  # noqa: TRY004
        return found

    def decide_with(
        self,
        request: PolicyRequest,
        facts: Mapping[str, object] | None,
        now: float,
        *,
        trace: bool = False,
        peek: Peek | None = None,
    ) -> Decision | Needs:
        """Decide with the facts given and those ``peek`` holds, or say which are needed.

        ``peek(request, now, name)`` gives a fact held without waiting, or `ABSENT`: with
        it, a request whose facts are all at hand is decided in one walk.
        `Needs` names every fact the walk read, at hand or not, so that one
        gathering brings them all.
        """
        said: list[str] | None = [] if trace else None
        walk = _Walk(request, facts or _NO_FACTS, peek, now, self, said)
        found = walk.nodes(self.nodes, 0)
        read = walk.facts
        if read is not None and read.missing:
            return Needs(frozenset(read.missing.union(read)))
        if found is None:
            walk.say(0, f"{DEFAULT_RULE}: no rule matched -> {self.default.line}")
            found = self.default_decision
        lines = tuple(walk.lines) if walk.lines is not None else ()
        if not lines and not walk.effects and not walk.observed:
            return found
        effects, observed = tuple(walk.effects), tuple(walk.observed)
        return Decision(found.action, found.rule, lines, effects, found.values, observed)

    def describe(self) -> list[str]:
        """The rules as the engine will use them, for ``postgate show``."""
        lines = ["lists:"] if self.lists else []
        lines += [f"{_INDENT}{named.describe()}" for _, named in sorted(self.lists.items())]
        lines.append("rules (the first that matches decides):")
        lines += _describe(self.nodes, 1)
        lines.append(f"{_INDENT}{DEFAULT_RULE}: when no rule matched -> {self.default.line}")
        return lines

    def _digest(self) -> str:
        """Short hash of the compiled rules and every list's contents."""
        h = hashlib.sha256()
        for line in self.describe():
            h.update(line.encode("utf-8", "surrogatepass") + b"\n")
        for name, named in sorted(self.lists.items()):
            h.update(f"{name}={named.digest}\n".encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:12]


def _when(conditions: tuple[Condition, ...], checks: tuple[Check, ...] = ()) -> str:
    texts = [c.text for c in conditions] + [c.text for c in checks]
    return " and ".join(texts) if texts else "always"


def _describe(nodes: tuple[Node, ...], depth: int) -> list[str]:
    pad = _INDENT * depth
    lines = []
    for node in nodes:
        if isinstance(node, Rule):
            via = f" [{node.shortcut}]" if node.shortcut else ""
            when = _when(node.conditions, node.checks)
            mode = " [observe: not answered]" if node.observe else ""
            lines.append(f"{pad}{node.id}:{via}{mode} if {when} -> {node.action.line}")
            continue
        mode = " [observe: not answered]" if node.observe else ""
        lines.append(f"{pad}{node.id}: group{mode}, if {_when(node.conditions)}:")
        lines += _describe(node.children, depth + 1)
        after = f"-> {node.default.line}" if node.default else "(go on after the group)"
        lines.append(f"{pad}{node.id}: when no rule in the group matched {after}")
    return lines
