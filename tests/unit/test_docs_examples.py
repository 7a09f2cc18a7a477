"""docs/testing.md's example output is what the commands print today.

An admin compares the page with their terminal; a line number off by one
already reads as a bug. Every `$ postgate ...` session on the page is run and
compared in full; the shortened replay example ("...") must match line by line.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest

from postgate.commands.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "testing.md"
REPLAY = "postgate replay -c conf/examples/reference.toml conf/examples/test_reference.policy"


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def run(command: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``command`` run in-process from the repository root; its standard output."""
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    argv = shlex.split(command)
    assert "postgate" == argv[0]
    main(argv[1:])
    return out.getvalue()


def sessions() -> list[tuple[str, str]]:
    """(command, output) for every block that starts with ``$ postgate``."""
    found = []
    for block in fenced_blocks(PAGE.read_text()):
        first, _, rest = block.partition("\n")
        if first.startswith("$ postgate "):
            found.append((first[2:], rest))
    return found


def test_page_has_sessions() -> None:
    assert sessions()


@pytest.mark.parametrize(("command", "output"), sessions(), ids=lambda v: v.split(" ")[1])
def test_session_output_is_what_the_command_prints(
    command: str, output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert output == run(command, monkeypatch)


def test_replay_example_lines_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each line of the shortened replay example is in the real output, in order."""
    example = next(b for b in fenced_blocks(PAGE.read_text()) if "answers per rule" in b)
    actual = run(REPLAY, monkeypatch).splitlines()
    shown = [line for line in example.splitlines() if line.strip() and line.strip() != "..."]
    positions = [actual.index(line) if line in actual else -1 for line in shown]
    assert [] == [line for line, at in zip(shown, positions, strict=True) if at < 0]
    assert sorted(positions) == positions


EVENT_CLAIM = re.compile(r"(?:logs|logged as) `([a-z_]+)`")


def test_event_names_in_the_docs_are_logged() -> None:
    """Every `logs `name`` in README and docs/ is an event the code logs."""
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "postgate").rglob("*.py"))
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    claimed = {name for page in pages for name in EVENT_CLAIM.findall(page.read_text())}
    assert claimed
    assert [] == sorted(name for name in claimed if f'"{name}"' not in source)
