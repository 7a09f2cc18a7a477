"""Typed reads of TOML tables, the same for every part of the configuration.

The ``[daemon]`` and ``[record]`` tables, named lists and rule tables all read
keys and values through here, so an unknown key or a value of the wrong type
reads the same wherever it is. A bad value is reported at its place and the
default is used, so loading goes on and ``postgate check`` shows every mistake.
Imports `problems` and the replies parser (which imports nothing from config
or rules), so the rule compiler can use it without a cycle.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from postgate.replies.parsing import parse_action
from postgate.replies.text import ReplyError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from postgate.config.problems import Problems
    from postgate.replies.model import Action

_D = TypeVar("_D")


def suggest(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known word, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(
    table: Mapping[str, object],
    known: Iterable[str],
    place: str,
    problems: Problems,
    *,
    otherwise: Callable[[str], str] | None = None,
) -> None:
    """Report every key of ``table`` that is not in ``known``; ``place`` "" is the top level.

    ``otherwise(key)`` gives the reason for a key close to no known one: a
    rule table's stray key is more likely a misspelt attribute than a
    misspelt ``action``, and the admin should be pointed there.
    """
    names = tuple(known)
    for key in table:
        if key in names:
            continue
        hint = suggest(key, names)
        if otherwise is not None and not hint:
            reason = otherwise(key)
        else:
            reason = f"unknown key{hint}; known: {', '.join(names)}"
        problems.error(_join(place, key), reason)


def read_action(value: Any, place: str, problems: Problems) -> Action | None:
    """An action string parsed, its warnings kept; None (reported) when it is not one."""
    if not isinstance(value, str):
        problems.error(place, f"must be an action string, not {value!r}")
        return None
    try:
        parsed = parse_action(value)
    except ReplyError as exc:
        problems.error(place, str(exc))
        return None
    for warning in parsed.warnings:
        problems.warn(place, warning)
    return parsed.action


@dataclass(slots=True)
class Values:
    """Typed reads from one TOML table at ``place``, recording a problem per bad value."""

    table: Mapping[str, Any]
    place: str
    problems: Problems

    def where(self, key: str) -> str:
        return _join(self.place, key)

    def _bad(self, key: str, reason: str) -> None:
        self.problems.error(self.where(key), reason)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self._bad(key, f"must be true or false, not {value!r}")
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            self._bad(key, f"must be a number in {low:g}..{high:g}, not {value!r}")
            return default
        return value

    def count(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self._bad(key, f"must be a whole number in {low}..{high}, not {value!r}")
            return default
        return value

    def choice(self, key: str, default: _D, choices: tuple[str, ...]) -> str | _D:
        """One of ``choices``; an absent key reads as ``default`` and is checked like a value."""
        value = self.table.get(key, default)
        if value not in choices:
            self._bad(key, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return str(value)

    def strings(
        self, key: str, default: tuple[str, ...], check: Callable[[str], str | None]
    ) -> tuple[str, ...]:
        """A list of strings; ``check`` gives each item's problem, reported at ``key[i]``."""
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._bad(key, "must be a list of strings")
            return default
        for index, item in enumerate(value):
            reason = check(item)
            if reason:
                self.problems.error(f"{self.where(key)}[{index}]", reason)
        return tuple(value)

    def action(self, key: str, default: Action) -> Action:
        if key not in self.table:
            return default
        found = read_action(self.table[key], self.where(key), self.problems)
        return default if found is None else found


def _join(place: str, key: str) -> str:
    return f"{place}.{key}" if place else key


__all__ = ["Values", "check_keys", "read_action", "suggest"]
