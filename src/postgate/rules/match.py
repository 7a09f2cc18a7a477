"""Compiled conditions: what each test reads, how it compares, and its words.

A `Condition` holds no closure but a small tree (`Test`, `Not`, `AllOf`,
`AnyOf`) over `View`s of the request, each chosen and specialised at load.
`postgate.rules.program` turns the trees of a whole ruleset into one Python
function, so per request there is no dispatch on the config and no call per
condition. Each `Condition` also carries its text, which `postgate show`
prints and a decision trace names when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from postgate.rules.attributes import DERIVED, FOLDED
from postgate.rules.domains import DomainSet

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from postgate.rules.networks import NetworkSet
    from postgate.rules.patterns import Pattern

COMPARISONS: Final = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
_SHOWN: Final = 4

# How a test reads an attribute (`View.kind`; `program` spells each one out):
#   value    the value as sent ("" when absent); derived names split their base
#   key      the value folded for comparison (`facts.fold`)
#   number   the value as a whole number (`facts.number`)
#   address  the value parsed as an IP address (`networks.parse_address`)
#   sent     whether Postfix sent the attribute (derived: its base)


class Lookup(Protocol):
    """Anything that answers ``key in lookup`` for a folded value."""

    def __contains__(self, key: str, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class View:
    """One way of reading one attribute; equal views are computed once."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Test:
    """``view OP operand``; ``op`` is a comparison, ``in``, ``is`` or ``search``."""

    op: str
    view: View
    operand: object


@dataclass(frozen=True, slots=True)
class Not:
    inner: Code


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Code, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Code, ...]


Code = Test | Not | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class Condition:
    """One test and the words that describe it."""

    text: str
    code: Code


def show_values(values: Iterable[str]) -> str:
    """``"a"`` or ``("a", "b", ... +3 more)`` for describe lines."""
    items = sorted(values)
    shown = ", ".join(f'"{v}"' for v in items[:_SHOWN])
    if len(items) > _SHOWN:
        shown += f", ... +{len(items) - _SHOWN} more"
    return shown if len(items) == 1 else f"({shown})"


def equals(name: str, keys: Collection[str], shown: Iterable[str]) -> Condition:
    """The folded value is one of ``keys`` (already folded like the attribute)."""
    frozen = frozenset(keys)
    key = View("key" if name in FOLDED else "value", name)
    if len(frozen) == 1:
        (only,) = frozen
        return Condition(f"{name} = {show_values(shown)}", Test("eq", key, only))
    return Condition(f"{name} in {show_values(shown)}", Test("in", key, frozen))


def in_keys(name: str, entries: Lookup, text: str) -> Condition:
    """The folded value is in a list (domains, addresses, strings)."""
    if isinstance(entries, DomainSet) and not entries.subdomains:
        entries = entries.names  # a plain set: the test runs in C
    key = View("key" if name in FOLDED else "value", name)
    return Condition(f"{name} in {text}", Test("in", key, entries))


def in_networks(name: str, networks: NetworkSet, text: str) -> Condition:
    return Condition(f"{name} in {text}", Test("in", View("address", name), networks))


def matches(name: str, patterns: tuple[Pattern, ...], text: str = "") -> Condition:
    """Any pattern is found in the raw value (`patterns.MAX_SUBJECT` bounds it).

    ``text`` names a pattern list instead of spelling out all of its patterns.
    """
    text = text or " or ".join(f"/{p.source}/" for p in patterns)
    tests = tuple(Test("search", View("value", name), p) for p in patterns)
    if not tests:  # an empty pattern list matches nothing
        return Condition(f"{name} ~ {text}", Test("in", View("value", name), frozenset()))
    return Condition(f"{name} ~ {text}", tests[0] if len(tests) == 1 else AnyOf(tests))


def compare(name: str, op: str, limit: int) -> Condition:
    """A number compared with ``limit``; missing or non-numeric counts as 0."""
    return Condition(f"{name} {COMPARISONS[op]} {limit}", Test(op, View("number", name), limit))


def empty(name: str, want: bool) -> Condition:
    text = f"{name} is empty" if want else f"{name} is not empty"
    return Condition(text, Test("eq" if want else "ne", View("value", name), ""))


def present(name: str, want: bool) -> Condition:
    text = f"{name} is sent" if want else f"{name} is not sent"
    return Condition(text, Test("is", View("sent", DERIVED.get(name, name)), want))


def negate(condition: Condition) -> Condition:
    return Condition(f"not ({condition.text})", Not(condition.code))


def all_of(conditions: list[Condition]) -> Condition:
    """Several operators on one attribute: all must hold."""
    if len(conditions) == 1:
        return conditions[0]
    text = " and ".join(c.text for c in conditions)
    return Condition(text, AllOf(tuple(c.code for c in conditions)))
