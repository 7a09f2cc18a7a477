"""Point a problem at its rule and line: ``FILE:LINE: rules[8] (SPAMTRAP).action``.

Places count rules from 0 like TOML array indexes, which an admin must count
by hand in a long file. The rule's id and the line in the file make a
problem findable at a glance. tomllib keeps no positions, so the lines come
from the table headers (``[[rules]]``, ``[[rules.rules]]``, ``[lists.x]``)
and the ``key =`` lines under them; a rule written as an inline table gets
no line ("where TOML allows"). Imports only `problems`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from postgate.config.problems import Problem

_HEADER: Final = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(?:#.*)?")
_KEY: Final = re.compile(r"\s*\"?([A-Za-z0-9_\-]+)\"?\s*=")
_RULE_PATH: Final = re.compile(r"rules\[\d+\](?:\.rules\[\d+\])*")
_STEP: Final = re.compile(r"\.?rules\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class _Table:
    """A table header's resolved place (``rules[3].rules[0]``) and its lines."""

    place: str
    first: int  # the header's line, counted from 1
    last: int  # the last line before the next header


def locate(problems: list[Problem], doc: Mapping[str, Any], text: str, file: str) -> None:
    """Give each problem of ``file`` its line and its rule ids, in place."""
    lines = text.splitlines()
    tables = list(_tables(lines))
    for index, problem in enumerate(problems):
        if problem.file != file or not problem.place:
            continue
        problems[index] = dataclasses.replace(
            problem, line=_line(problem.place, tables, lines), shown=_with_ids(problem.place, doc)
        )


def _tables(lines: list[str]) -> Iterator[_Table]:
    """Every table header outside multi-line strings, with its place resolved."""
    counts: dict[str, int] = {}
    latest: dict[str, str] = {}  # array name -> place of its latest element
    headers: list[tuple[int, str]] = []
    in_string = False
    for number, line in enumerate(lines, start=1):
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_string = not in_string
        found = None if in_string else _HEADER.fullmatch(line)
        if found is None:
            continue
        name = found.group(2).replace('"', "").replace(" ", "")
        parent, _, last = name.rpartition(".")
        base = latest.get(parent, parent)
        place = f"{base}.{last}" if base else last
        if found.group(1) == "[[":
            counts[place] = counts.get(place, -1) + 1
            place = f"{place}[{counts[place]}]"
            latest[name] = place
        headers.append((number, place))
    for (number, place), following in zip(
        headers, [*headers[1:], (len(lines) + 1, "")], strict=True
    ):
        yield _Table(place, number, following[0] - 1)


def _line(place: str, tables: list[_Table], lines: list[str]) -> int | None:
    best = None
    for table in tables:
        if _starts(place, table.place) and (best is None or len(table.place) > len(best.place)):
            best = table
    if best is None:
        return None
    key = re.match(r"\.([A-Za-z0-9_\-]+)", place[len(best.place) :])
    if key is not None:
        for number in range(best.first + 1, best.last + 1):
            found = _KEY.match(lines[number - 1])
            if found is not None and found.group(1) == key.group(1):
                return number
    return best.first


def _starts(place: str, prefix: str) -> bool:
    return place == prefix or place.startswith((prefix + ".", prefix + "["))


def _with_ids(place: str, doc: Mapping[str, Any]) -> str:
    """``rules[1].rules[0].action`` as ``rules[1] (G).rules[0] (P).action``."""
    path = _RULE_PATH.match(place)
    if path is None:
        return ""
    shown: list[str] = []
    tables: Any = doc.get("rules")
    for step in _STEP.finditer(path.group(0)):
        index = int(step.group(1))
        table = tables[index] if isinstance(tables, list) and index < len(tables) else None
        rule_id = table.get("id") if isinstance(table, dict) else None
        label = f" ({rule_id})" if isinstance(rule_id, str) and rule_id else ""
        shown.append(f"rules[{index}]{label}")
        tables = table.get("rules") if isinstance(table, dict) else None
    return ".".join(shown) + place[path.end() :]


__all__ = ["locate"]
