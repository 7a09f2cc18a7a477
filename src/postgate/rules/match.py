"""Compiled conditions: small closures over a request's `Facts`.

Every matcher is chosen and specialised at load (the structlog TimeStamper
shape, style.md A3): per request there is no parsing, no dispatch on the
config, only the closure's own test. Each `Condition` also carries its text,
which `postgate show` prints and a decision trace names when it fails.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from postgate.rules.attributes import DERIVED
from postgate.rules.facts import plain

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

    from postgate.rules.facts import Facts
    from postgate.rules.networks import NetworkSet
    from postgate.rules.patterns import Pattern

    Test = Callable[[Facts], bool]

COMPARISONS: Final = {
    "gt": (operator.gt, ">"),
    "ge": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "le": (operator.le, "<="),
    "eq": (operator.eq, "=="),
    "ne": (operator.ne, "!="),
}
_SHOWN: Final = 4


class Lookup(Protocol):
    """Anything that answers ``key in lookup`` for a folded value."""

    def __contains__(self, key: str, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class Condition:
    """One test and the words that describe it."""

    text: str
    test: Test


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
    if len(frozen) == 1:
        (only,) = frozen
        text = f"{name} = {show_values(shown)}"
        if plain(name):
            return Condition(text, lambda f: f.raw.get(name, "") == only)
        return Condition(text, lambda f: f.key(name) == only)
    text = f"{name} in {show_values(shown)}"
    if plain(name):
        return Condition(text, lambda f: f.raw.get(name, "") in frozen)
    return Condition(text, lambda f: f.key(name) in frozen)


def in_keys(name: str, entries: Lookup, text: str) -> Condition:
    """The folded value is in a list (domains, addresses, strings)."""
    if plain(name):
        return Condition(f"{name} in {text}", lambda f: f.raw.get(name, "") in entries)
    return Condition(f"{name} in {text}", lambda f: f.key(name) in entries)


def in_networks(name: str, networks: NetworkSet, text: str) -> Condition:
    return Condition(f"{name} in {text}", lambda f: f.address(name) in networks)


def matches(name: str, patterns: tuple[Pattern, ...]) -> Condition:
    """Any pattern is found in the raw value (`patterns.MAX_SUBJECT` bounds it)."""
    text = " or ".join(f"/{p.source}/" for p in patterns)
    if len(patterns) == 1:
        search = patterns[0].search
        if name not in DERIVED:
            return Condition(f"{name} ~ {text}", lambda f: search(f.raw.get(name, "")))
        return Condition(f"{name} ~ {text}", lambda f: search(f.value(name)))
    return Condition(f"{name} ~ {text}", lambda f: any(p.search(f.value(name)) for p in patterns))


def compare(name: str, op: str, limit: int) -> Condition:
    """A number compared with ``limit``; missing or non-numeric counts as 0."""
    function, symbol = COMPARISONS[op]
    return Condition(f"{name} {symbol} {limit}", lambda f: function(f.number(name), limit))


def empty(name: str, want: bool) -> Condition:
    text = f"{name} is empty" if want else f"{name} is not empty"
    if name not in DERIVED:
        return Condition(text, lambda f: (not f.raw.get(name)) is want)
    return Condition(text, lambda f: (not f.value(name)) is want)


def present(name: str, want: bool) -> Condition:
    text = f"{name} is sent" if want else f"{name} is not sent"
    return Condition(text, lambda f: f.present(name) is want)


def negate(condition: Condition) -> Condition:
    test = condition.test
    return Condition(f"not ({condition.text})", lambda f: not test(f))


def all_of(conditions: list[Condition]) -> Condition:
    """Several operators on one attribute: all must hold."""
    if len(conditions) == 1:
        return conditions[0]
    tests = tuple(c.test for c in conditions)
    text = " and ".join(c.text for c in conditions)
    return Condition(text, lambda f: all(t(f) for t in tests))
