"""A ruleset as one generated Python function: the per-request hot path.

Walking rule objects and calling one closure per condition costs a Python
call for every test of every rule tried; written out as straight-line ``if``
statements over local variables, the same decision costs a fraction of that.
So a `Ruleset` is turned, once at load, into the source of one
function ``decide(raw)`` and compiled, in the way the standard library builds
dataclass and namedtuple methods.

No text from the config ever enters the generated source: every value a rule
holds (strings, sets, lists, patterns, the decisions) is bound to a generated
name ``k<N>`` in the function's namespace, and the source is made only of
those names, ``v<N>`` locals, the helpers below and fixed operators. `_SAFE`
checks that before anything is compiled, so a hostile config can at worst
make a slow ruleset, never run code.

Views (`match.View`) used by more than one test are computed once, at the
top of the function; the others where they are tested. None of them can
raise on request content, which keeps deciding total.

The source is registered with `linecache` under ``<postgate ruleset DIGEST>``
(the digest that ``postgate check`` and the daemon's logs show) for as long as
a function compiled from it lives, so a traceback or pdb shows the generated
line; ``postgate show --python`` prints it. All of this happens once per
build, nothing per request.
"""

from __future__ import annotations

import linecache
import re
import reprlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from postgate.rules.attributes import DERIVED, DOMAIN, FINGERPRINT, FOLDED
from postgate.rules.facts import number, split_address
from postgate.rules.match import AllOf, Not, Test, View
from postgate.rules.model import Decision
from postgate.rules.networks import parse_address
from postgate.rules.patterns import MAX_SUBJECT, Pattern

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from types import FunctionType

    from postgate.rules.match import Code, Condition
    from postgate.rules.model import Node

    # decide(raw) -> Decision; first_failing(raw) -> index of a node's failing condition
    Program = Callable[[dict[str, str]], Decision]
    FirstFailing = Callable[[dict[str, str]], int]

_OPERATORS: Final = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "in": "in",
    "is": "is",
}
# What generated source may contain besides whitespace; config text never does.
_SAFE: Final = re.compile(
    r"(?:[kvf]\d+|def|decide|return|if|and|or|not|in|is|pass|True|None|raw|get|_number|"
    r"_address|_split|lower|removesuffix|replace|while|break|o|append|_observed|"
    r"[()\[\]:,.=!<>-]|\"[.:]?\"|\d+|\s)*"
)


_CALLS: Final = {"number": "_number({})", "address": "_address({})"}


def _observed(decision: Decision, observed: list[Decision]) -> Decision:
    """``decision``, carrying what observed rules would have answered before it."""
    if not observed:
        return decision
    return Decision(
        decision.action,
        decision.rule,
        decision.trace,
        decision.effects,
        decision.values,
        tuple(observed),
    )


_HELPERS: Final[dict[str, Any]] = {
    "_number": number,
    "_address": parse_address,
    "_split": split_address,
    "_observed": _observed,
}


@dataclass(slots=True)
class _Writer:
    """Source lines and the namespace their ``k<N>`` names come from."""

    namespace: dict[str, Any] = field(default_factory=lambda: dict(_HELPERS))
    constants: dict[int, str] = field(default_factory=dict)
    hoisted: dict[View, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    # Some rule or group is in observe mode: the walk keeps a list ``o`` of
    # what they would have answered. Without one, nothing of it is generated.
    observes: bool = False

    def constant(self, value: object) -> str:
        """The generated name bound to ``value`` (one name per object)."""
        name = self.constants.get(id(value))
        if name is None:
            name = self.constants[id(value)] = f"k{len(self.constants)}"
            self.namespace[name] = value
        return name

    def view(self, seen: View) -> str:
        """Python expression for ``seen``, or its local when it was hoisted."""
        local = self.hoisted.get(seen)
        if local is not None:
            return local
        if seen.kind == "sent":
            return f"({self.constant(seen.name)} in raw)"
        if seen.kind == "value":
            return self.value(seen.name)
        value = self.view(View("value", seen.name))
        if seen.kind == "key":
            return _fold(seen.name, value)
        return _CALLS[seen.kind].format(value)

    def value(self, name: str) -> str:
        base = DERIVED.get(name)
        if base is None:
            return f'get({self.constant(name)}, "")'
        part = 0 if name.endswith("_localpart") else 1
        return f"_split({self.view(View('value', base))})[{part}]"

    def code(self, code: Code) -> str:
        if isinstance(code, Test):
            return self.test(code)
        if isinstance(code, Not):
            return f"not ({self.code(code.inner)})"
        joiner = " and " if isinstance(code, AllOf) else " or "
        return "(" + joiner.join(f"({self.code(part)})" for part in code.parts) + ")"

    def test(self, test: Test) -> str:
        seen = self.view(test.view)
        operand = test.operand
        if test.op == "search":
            assert isinstance(operand, Pattern)
            search = self.constant(operand.regex.search)
            return f"({search}({seen}, 0, {MAX_SUBJECT}) is not None)"
        return f"({seen} {_OPERATORS[test.op]} {self.constant(operand)})"


def _fold(name: str, value: str) -> str:
    """`facts.fold` written out for one attribute (kept equal by the tests)."""
    if name not in FOLDED:
        return value
    if name in DOMAIN:
        return f'{value}.lower().removesuffix(".")'
    if name in FINGERPRINT:
        return f'{value}.lower().replace(":", "")'
    return f"{value}.lower()"


def _views(code: Code) -> Iterable[View]:
    if isinstance(code, Test):
        yield code.view
    elif isinstance(code, Not):
        yield from _views(code.inner)
    else:
        for part in code.parts:
            yield from _views(part)


def _when(writer: _Writer, conditions: Sequence[Condition]) -> str:
    return " and ".join(writer.code(c.code) for c in conditions)


def _body(writer: _Writer, nodes: Sequence[Node], depth: int, *, observing: bool = False) -> None:
    """The nodes as ``if`` statements; ``observing``: inside a group in observe mode.

    There a decision is noted in ``o`` and ``break`` leaves the group's
    one-pass ``while`` loop, so the walk goes on after the group; a rule of
    its own in observe mode notes its decision and goes on to the next rule.
    """
    pad = "    " * depth
    for node in nodes:
        children = getattr(node, "children", None)
        if children is None:
            assert node.decision is not None  # a rule's, always built
            when = _when(writer, node.conditions)  # names its constants first, as before
            done = _decided(writer, node.decision, observing=observing, observe=node.observe)
            if not node.conditions:
                writer.lines += [f"{pad}{line}" for line in done]
                if node.observe:
                    continue
                return  # nothing after an unconditional rule can run
            writer.lines.append(f"{pad}if {when}:")
            writer.lines += [f"{pad}    {line}" for line in done]
            continue
        writer.lines.append(f"{pad}if {_when(writer, node.conditions) or 'True'}:")
        inner = depth + 1
        if node.observe:
            writer.lines.append(f"{pad}    while True:")
            inner += 1
        _body(writer, children, inner, observing=observing or node.observe)
        if node.decision is not None:
            done = _decided(writer, node.decision, observing=observing or node.observe)
            writer.lines += [f"{'    ' * inner}{line}" for line in done]
        if node.observe:
            writer.lines.append(f"{'    ' * inner}break")
        elif writer.lines[-1].endswith(":"):  # an empty group body
            writer.lines.append(f"{pad}    pass")


def _decided(
    writer: _Writer, decision: Decision, *, observing: bool, observe: bool = False
) -> list[str]:
    """The statements that take ``decision``: answer it, or note it in ``o`` when observed."""
    name = writer.constant(decision)
    if observe:
        return [f"o.append({name})"]
    if observing:
        return [f"o.append({name})", "break"]
    if writer.observes:
        return [f"return _observed({name}, o)"]
    return [f"return {name}"]


def _hoist(writer: _Writer, nodes: Sequence[Node]) -> None:
    """Compute each view tested more than once a single time, at the top."""
    counts: dict[View, int] = {}
    for condition in (c for node in walk(nodes) for c in node.conditions):
        for seen in _views(condition.code):
            counts[seen] = counts.get(seen, 0) + 1
    shared = [seen for seen, count in counts.items() if count > 1]
    for seen in sorted(shared, key=lambda v: v.kind != "value"):  # values first
        local = f"v{len(writer.hoisted)}"
        writer.lines.append(f"    {local} = {writer.view(seen)}")
        writer.hoisted[seen] = local


def build(
    nodes: Sequence[Node], default: Decision, digest: str
) -> tuple[Program, dict[str, FirstFailing], str]:
    """``decide(raw)`` for these rules, per rule id a trace helper, and their source.

    The helper returns the index of the node's first condition that fails,
    or -1 when all hold; the trace (`engine`) uses it to explain a decision
    with the same code that makes it.
    """
    writer = _Writer(observes=any(node.observe for node in walk(nodes)))
    writer.lines += ["def decide(raw):", "    get = raw.get"]
    if writer.observes:
        writer.lines.append("    o = []")
    _hoist(writer, nodes)
    _body(writer, nodes, 1)
    writer.lines += [f"    {line}" for line in _decided(writer, default, observing=False)]
    writer.hoisted = {}
    failing: dict[str, str] = {}
    for node in walk(nodes):
        name = failing[node.id] = f"f{len(failing)}"
        writer.lines += [f"def {name}(raw):", "    get = raw.get"]
        for index, condition in enumerate(node.conditions):
            writer.lines.append(f"    if not ({writer.code(condition.code)}):")
            writer.lines.append(f"        return {index}")
        writer.lines.append("    return -1")
    source = "\n".join(writer.lines) + "\n"
    namespace = _run(source, writer.namespace, f"<postgate ruleset {digest}>")
    decide = namespace["decide"]
    return decide, {rule: namespace[name] for rule, name in failing.items()}, source


def walk(nodes: Sequence[Node]) -> Iterator[Node]:
    """Every node, each group before its children, in rule order."""
    for node in nodes:
        yield node
        yield from walk(getattr(node, "children", ()))


def _run(source: str, namespace: dict[str, Any], filename: str) -> dict[str, Any]:
    if not _SAFE.fullmatch(source):  # pragma: no cover - only a bug here could fail this
        raise AssertionError("generated rule source holds unexpected text")
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - see module doc
    _register(filename, source, namespace["decide"])
    return namespace


# How many live decide functions were compiled under each registered name:
# equal rulesets share one, and the last one to go takes the lines out of
# linecache, so reloads do not pile sources up.
_USERS: Final[dict[str, int]] = {}
_USERS_LOCK: Final = threading.Lock()  # reloads build in a thread; finalizers run anywhere


def _register(filename: str, source: str, decide: object) -> None:
    with _USERS_LOCK:
        _USERS[filename] = _USERS.get(filename, 0) + 1
        # mtime None: linecache.checkcache keeps entries that have no file behind them.
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    weakref.finalize(decide, _unregister, filename)


def _unregister(filename: str) -> None:
    with _USERS_LOCK:
        _USERS[filename] -= 1
        if not _USERS[filename]:
            del _USERS[filename]
            linecache.cache.pop(filename, None)


_REPR: Final = reprlib.Repr()  # long lists shown by their first few items
_REPR.maxstring = _REPR.maxother = 80


def legend(program: Program) -> list[str]:
    """One comment line per ``k<N>`` name: the value the generated source reads there."""
    namespace = cast("FunctionType", program).__globals__
    names = sorted((n for n in namespace if re.fullmatch(r"k\d+", n)), key=lambda n: int(n[1:]))
    return [f"# {name} = {_shown(namespace[name])}" for name in names]


def _shown(value: object) -> str:
    if isinstance(value, Decision):
        return f"{value.rule} -> {value.action.line}"
    pattern = getattr(value, "__self__", None)  # a compiled regex's bound search
    if isinstance(pattern, re.Pattern):
        return f"search {_REPR.repr(pattern.pattern)}"
    return _REPR.repr(value)


__all__ = ["build", "legend", "walk"]
