"""First-match evaluation of compiled rules into a `Decision`.

Pure and synchronous: no I/O, no clock, nothing from Twisted. A request
walks the rules in order; the first rule whose conditions all hold decides,
a group whose conditions hold walks its children and may end with its own
default, and when nothing decides the implicit default is ``DUNNO`` (Postfix
then goes on with its own restrictions, policy-protocol.md §4.1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from postgate.replies import DUNNO, Action
from postgate.rules.facts import Facts

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from postgate.protocol import PolicyRequest
    from postgate.rules.lists import NamedList
    from postgate.rules.match import Condition, Test

DEFAULT_RULE: Final = "DEFAULT"
# The rule id of the `on_error` answer, when deciding raised (daemon and replay alike).
ON_ERROR_RULE: Final = "ON_ERROR"
_INDENT: Final = "    "


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer, which rule said so, and (on request) how it got there."""

    action: Action
    rule: str
    trace: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """Conditions (all must hold) and the action that then decides."""

    id: str
    conditions: tuple[Condition, ...]
    action: Action
    shortcut: str = ""
    holds: Test = field(init=False, repr=False, compare=False)
    # Built once here so that deciding allocates nothing for the answer.
    decision: Decision = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "holds", conjunction(tuple(c.test for c in self.conditions)))
        object.__setattr__(self, "decision", Decision(self.action, self.id))


@dataclass(frozen=True, slots=True)
class Group:
    """Shared conditions over child rules, with an optional closing default."""

    id: str
    conditions: tuple[Condition, ...]
    children: tuple[Rule | Group, ...]
    default: Action | None = None
    holds: Test = field(init=False, repr=False, compare=False)
    decision: Decision | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "holds", conjunction(tuple(c.test for c in self.conditions)))
        default = None if self.default is None else Decision(self.default, self.id)
        object.__setattr__(self, "decision", default)


Node = Rule | Group


def _always(_facts: Facts) -> bool:
    return True


def conjunction(tests: tuple[Test, ...]) -> Test:
    """One test for a node's conditions, so deciding makes one call per node."""
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:  # the common case: spell it out, no loop
        first, second = tests
        return lambda f: first(f) and second(f)
    return lambda f: all(test(f) for test in tests)


def _first_match(nodes: tuple[Node, ...], facts: Facts) -> Decision | None:
    for node in nodes:
        if not node.holds(facts):
            continue
        if isinstance(node, Rule):
            return node.decision
        found = _first_match(node.children, facts)
        if found is not None:
            return found
        if node.decision is not None:
            return node.decision
    return None


def _failed(node: Node, facts: Facts) -> Condition | None:
    for condition in node.conditions:
        if not condition.test(facts):
            return condition
    return None


def _traced(
    nodes: tuple[Node, ...], facts: Facts, lines: list[str], depth: int
) -> tuple[Action, str] | None:
    pad = _INDENT * depth
    for node in nodes:
        failed = _failed(node, facts)
        if failed is not None:
            lines.append(f"{pad}{node.id}: failed: {failed.text}")
            continue
        if isinstance(node, Rule):
            lines.append(f"{pad}{node.id}: matched -> {node.action.line}")
            return node.action, node.id
        lines.append(f"{pad}{node.id}: group matched, trying its rules")
        found = _traced(node.children, facts, lines, depth + 1)
        if found is not None:
            return found
        if node.default is not None:
            lines.append(
                f"{pad}{node.id}: no rule in the group decided -> default {node.default.line}"
            )
            return node.default, node.id
        lines.append(f"{pad}{node.id}: no rule in the group decided, going on")
    return None


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Compiled rules in order, and the lists they read."""

    nodes: tuple[Node, ...] = ()
    lists: Mapping[str, NamedList] = field(default_factory=dict)
    default: Action = DUNNO
    default_decision: Decision = field(init=False, repr=False, compare=False)
    # Both are logged on every status report and reload: compute them once.
    rule_count: int = field(init=False, repr=False, compare=False)
    digest: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_decision", Decision(self.default, DEFAULT_RULE))
        object.__setattr__(self, "rule_count", sum(1 for _ in _walk(self.nodes)))
        object.__setattr__(self, "digest", self._digest())

    def decide(self, request: PolicyRequest, *, trace: bool = False) -> Decision:
        facts = Facts(request)
        if not trace:
            return _first_match(self.nodes, facts) or self.default_decision
        lines: list[str] = []
        found = _traced(self.nodes, facts, lines, 0)
        if found is None:
            lines.append(f"{DEFAULT_RULE}: no rule matched -> {self.default.line}")
            found = (self.default, DEFAULT_RULE)
        return Decision(found[0], found[1], tuple(lines))

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


def _walk(nodes: tuple[Node, ...]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if isinstance(node, Group):
            yield from _walk(node.children)


def _when(conditions: tuple[Condition, ...]) -> str:
    return " and ".join(c.text for c in conditions) if conditions else "always"


def _describe(nodes: tuple[Node, ...], depth: int) -> list[str]:
    pad = _INDENT * depth
    lines = []
    for node in nodes:
        if isinstance(node, Rule):
            via = f" [{node.shortcut}]" if node.shortcut else ""
            lines.append(f"{pad}{node.id}:{via} if {_when(node.conditions)} -> {node.action.line}")
            continue
        lines.append(f"{pad}{node.id}: group, if {_when(node.conditions)}:")
        lines += _describe(node.children, depth + 1)
        after = f"-> {node.default.line}" if node.default else "(go on after the group)"
        lines.append(f"{pad}{node.id}: when no rule in the group matched {after}")
    return lines
