"""Configuration problems, collected rather than raised one at a time.

An admin who runs ``postgate check`` wants every mistake in one pass, each
as ``FILE: place: reason``. Loaders therefore add to a `Problems` collector
and keep going; only the top-level loader turns a non-empty collector into a
`ConfigError`. This module imports nothing from postgate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in one file, at one place (``rules[3].client_address``)."""

    file: str
    place: str
    reason: str
    # Where an admin finds it: the file line, and the place with rule ids
    # (``rules[8] (SPAMTRAP).action``); added by `places.locate` when known.
    line: int | None = None
    shown: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        place = self.shown or self.place
        if place:
            return printable(f"{where}: {place}: {self.reason}")
        return printable(f"{where}: {self.reason}")


def printable(text: str) -> str:
    """``text`` with line breaks and other controls escaped: one problem, one line.

    Keys and values come from the file being checked; a TOML key may hold a
    newline, and echoed raw it would forge a line of ``postgate check``.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(slots=True)
class Problems:
    """Errors and warnings found while loading one configuration."""

    file: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, place: str, reason: str, *, file: str | None = None) -> None:
        self.errors.append(Problem(file or self.file, place, reason))

    def warn(self, place: str, reason: str, *, file: str | None = None) -> None:
        self.warnings.append(Problem(file or self.file, place, reason))

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError(tuple(self.errors), tuple(self.warnings))


class ConfigError(Exception):
    """A configuration that must not be used; carries every problem found."""

    def __init__(self, errors: tuple[Problem, ...], warnings: tuple[Problem, ...] = ()) -> None:
        super().__init__("\n".join(str(p) for p in errors))
        self.errors = errors
        self.warnings = warnings

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.errors)


def report_lines(
    source: object, errors: Sequence[Problem], warnings: Sequence[Problem]
) -> list[str]:
    """What every command-line tool prints about a load, refused or not.

    ``error:`` and ``warning:`` lines, then the verdict when an error refused it;
    `postgate check`, ``replay``, ``diff``, ``test`` and the pytest plugin all agree.
    """
    lines = [f"error: {p}" for p in errors] + [f"warning: {p}" for p in warnings]
    if errors:
        lines.append(f"{source}: {len(errors)} error(s); configuration refused")
    return lines
