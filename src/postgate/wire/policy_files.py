"""Request files ("policy files"): Postfix's own wire format plus expectations.

A file is blocks of ``name=value`` lines separated by an empty line, exactly
what Postfix sends (docs/protocol.md, Framing), so a request copied from a
capture pastes in as is. ``#`` lines are comments; inside a block a few of
them carry meaning (docs/testing.md, The request file format)::

    # name: bounce to a local user
    # expect: DUNNO
    # expect-rule: LOCAL_RECIPIENT
    # time: 2026-03-01T12:00:00Z

Files are read as UTF-8 with ``surrogateescape``, like the daemon reads the
socket, so a recorded request with broken bytes replays unchanged. A file
that is not in this shape raises `CorpusError` naming file and line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from pathlib import Path

_SPECIAL: Final = ("expect", "expect-rule", "name", "time")
# First line of every file `postgate.record.recorder` writes; a file starting with it
# may end in a block cut by a crash (see `whole_blocks`).
RECORDING_HEADER: Final = "# postgate recording (replay with: postgate replay FILE)\n"


class CorpusError(ValueError):
    """A request file that cannot be read as requests; names file and line."""


@dataclass(frozen=True, slots=True)
class Case:
    """One request with what it is expected to get (when the file says so)."""

    request: PolicyRequest
    expect: str | None
    expect_rule: str | None
    name: str
    source: str
    line: int
    time: float | None = None


@dataclass(slots=True)
class _Block:
    source: str
    line: int
    attrs: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add_comment(self, text: str, number: int) -> None:
        key, colon, value = text.lstrip("#").strip().partition(":")
        key = key.strip().lower()
        if not colon or key not in _SPECIAL:
            return
        if key in self.notes:
            raise CorpusError(f"{self.source}:{number}: second '# {key}:' in one request")
        self.notes[key] = value.strip()

    def add_attribute(self, text: str, number: int) -> None:
        name, sep, value = text.partition("=")
        if not sep or not name or name != name.strip():
            raise CorpusError(f"{self.source}:{number}: expected name=value, got {text[:60]!r}")
        self.attrs[name] = value  # the last of a repeated name wins, as in protocol.py

    def case(self) -> Case | None:
        if not self.attrs:
            if "expect" in self.notes or "expect-rule" in self.notes:
                raise CorpusError(f"{self.source}:{self.line}: an expectation without a request")
            return None
        notes = self.notes
        name = notes.get("name") or f"{self.source}:{self.line}"
        expect = notes.get("expect")
        if expect is not None:
            expect = expect.removeprefix("action=")
        time = _time(notes["time"], self.source, self.line) if "time" in notes else None
        request = PolicyRequest(self.attrs)
        return Case(request, expect, notes.get("expect-rule"), name, self.source, self.line, time)


# The times a recording can hold: what datetime can write back (years 1-9999).
EARLIEST: Final = dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()
LATEST: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()


def parse_time(text: str) -> float:
    """Unix seconds or ISO-8601; a time without a zone is UTC, never local time."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not EARLIEST <= seconds <= LATEST:  # NaN fails both
            raise ValueError(f"{text!r} is not a time between the years 1 and 9999")
        return seconds
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither unix seconds nor an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _time(text: str, source: str, line: int) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise CorpusError(f"{source}:{line}: '# time: {text}': {exc}") from None


def parse_policy_text(text: str, source: str = "<text>") -> list[Case]:
    """Every request block of ``text``, in file order; a recording's cut tail is left out."""
    cases: list[Case] = []
    block: _Block | None = None
    for number, raw in enumerate(whole_blocks(text).split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line:
            found = block.case() if block else None
            cases.extend([found] if found else [])
            block = None
            continue
        block = block or _Block(source, number)
        if line.startswith("#"):
            block.add_comment(line, number)
        else:
            block.add_attribute(line, number)
    found = block.case() if block else None
    return [*cases, found] if found else cases


def read_policy_file(path: Path) -> list[Case]:
    """Read one request file; OSError passes through, bad content is a CorpusError."""
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    return parse_policy_text(text, str(path))


def whole_blocks(text: str) -> str:
    """A recording cut by a crash mid-write, without its cut last block.

    The recorder ends every block with a blank line, so a recording that does
    not end with one lost the tail of its last write; a hand-written file may
    end anywhere and is returned unchanged.
    """
    if not text.startswith(RECORDING_HEADER) or text.endswith("\n\n"):
        return text
    cut = text.rfind("\n\n")
    return text[: cut + 2] if cut >= 0 else RECORDING_HEADER
