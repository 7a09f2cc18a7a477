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
from typing import TYPE_CHECKING, Final

from postgate.replies.model import DUNNO
from postgate.rules.model import DEFAULT_RULE, Decision, Rule
from postgate.rules.program import build, walk

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.replies.model import Action
    from postgate.rules.lists import NamedList
    from postgate.rules.match import Condition
    from postgate.rules.model import Needs, Node
    from postgate.rules.program import FirstFailing, Program
    from postgate.wire.codec import PolicyRequest

_INDENT: Final = "    "


def _traced(
    nodes: tuple[Node, ...],
    raw: dict[str, str],
    failing: Mapping[str, FirstFailing],
    lines: list[str],
    depth: int,
) -> tuple[Action, str] | None:
    pad = _INDENT * depth
    for node in nodes:
        failed = failing[node.id](raw)
        if failed >= 0:
            lines.append(f"{pad}{node.id}: failed: {node.conditions[failed].text}")
            continue
        if isinstance(node, Rule):
            lines.append(f"{pad}{node.id}: matched -> {node.action.line}")
            return node.action, node.id
        lines.append(f"{pad}{node.id}: group matched, trying its rules")
        found = _traced(node.children, raw, failing, lines, depth + 1)
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
    # The rules as one generated function (`program`), and its trace helpers.
    program: Program = field(init=False, repr=False, compare=False)
    failing: Mapping[str, FirstFailing] = field(init=False, repr=False, compare=False)
    source: str = field(init=False, repr=False, compare=False)  # for `postgate show --python`
    # Both are logged on every status report and reload: compute them once.
    rule_count: int = field(init=False, repr=False, compare=False)
    digest: str = field(init=False, repr=False, compare=False)
    # True when a rule reads facts that need I/O (state, DNS), which the answer
    # step must gather before deciding; no rule type reads any yet.
    needs_facts: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_decision", Decision(self.default, DEFAULT_RULE))
        object.__setattr__(self, "digest", self._digest())  # names the generated source
        program, failing, source = build(self.nodes, self.default_decision, self.digest)
        object.__setattr__(self, "program", program)
        object.__setattr__(self, "failing", failing)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "rule_count", sum(1 for _ in walk(self.nodes)))
        object.__setattr__(self, "needs_facts", False)

    def decide(self, request: PolicyRequest, *, trace: bool = False) -> Decision:
        if not trace:
            return self.program(request.raw)
        lines: list[str] = []
        found = _traced(self.nodes, request.raw, self.failing, lines, 0)
        if found is None:
            lines.append(f"{DEFAULT_RULE}: no rule matched -> {self.default.line}")
            found = (self.default, DEFAULT_RULE)
        return Decision(found[0], found[1], tuple(lines))

    def decide_with(
        self,
        request: PolicyRequest,
        facts: Mapping[str, object] | None,  # noqa: ARG002 - read by stateful rules
        *,
        trace: bool = False,
    ) -> Decision | Needs:
        """Decide with the facts gathered so far, or say which are still needed."""
        return self.decide(request, trace=trace)

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
