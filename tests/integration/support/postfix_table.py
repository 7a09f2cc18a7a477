"""The generated tables of docs/postfix.md: rows observed through a real Postfix.

A test module collects `Row`s while it drives Postfix, then `sync` compares
the rendered table with the block between ``<!-- BEGIN GENERATED: name -->``
and ``<!-- END GENERATED: name -->`` in docs/postfix.md. With
``POSTGATE_WRITE_DOCS=1`` the block is rewritten instead. No row is written by
hand, and a stale table fails the suite.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

DOC: Final = Path(__file__).resolve().parents[3] / "docs" / "postfix.md"
WRITE_ENV: Final = "POSTGATE_WRITE_DOCS"


@dataclass(frozen=True, slots=True)
class Row:
    """One observation: what postgate answered and what the SMTP client then saw."""

    case: str
    answer: str
    client_sees: str
    effect: str = ""


def code(text: str) -> str:
    """``text`` as Markdown code, one span per line; empty stays empty."""
    return "<br>".join(f"`{line}`" for line in text.splitlines())


def render(rows: Sequence[Row], columns: tuple[str, str, str, str]) -> str:
    """A Markdown table; cells are Markdown already (see `code`)."""
    head = f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}\n"
    cells = ((row.case, row.answer, row.client_sees, row.effect) for row in rows)
    body = "".join(f"| {' | '.join(c.replace('|', '&#124;') for c in r)} |\n" for r in cells)
    return head + body


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {name} -->\n", f"<!-- END GENERATED: {name} -->"


def splice(doc: str, name: str, table: str) -> str:
    """``doc`` with the block ``name`` replaced by ``table``."""
    begin, end = _markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(doc):
        raise AssertionError(f"{DOC}: no generated block {name!r} ({begin.strip()} ... {end})")
    return pattern.sub(lambda _m: begin + table + end, doc)


def sync(name: str, table: str) -> str:
    """Return the block as documented; rewrite it first when POSTGATE_WRITE_DOCS=1."""
    doc = DOC.read_text()
    if os.environ.get(WRITE_ENV) == "1":
        doc = splice(doc, name, table)
        DOC.write_text(doc)
    begin, end = _markers(name)
    start = doc.find(begin)
    if start < 0:
        raise AssertionError(f"{DOC}: no generated block {name!r}")
    return doc[start + len(begin) : doc.index(end, start)]


def stale_hint(name: str) -> str:
    return (
        f"docs/postfix.md block {name!r} differs from what Postfix did in this run; "
        f"regenerate with `{WRITE_ENV}=1 .venv/bin/pytest tests/integration`"
    )
