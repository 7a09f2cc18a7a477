"""The code facts postgate ships: enhanced status codes, basic reply codes, seed readings.

Three read-only tables loaded once from package data (``postgate/data``;
docs/replies.md, The code data):

* ``enhanced-status-codes.csv``: the IANA registry of enhanced status codes
  (RFC 3463, RFC 5248), one row per ``X.Y.Z``;
* ``basic-reply-codes.csv``: the three-digit codes of RFC 5321 §4.2, of the
  standards-track extensions, and the non-standard ones people meet in the
  wild, each non-standard code with the standard replies to use instead;
* ``seed-table.csv``: the user's seed table, row by row, with its verdict and
  correction (docs/replies.md, Where the seed table is wrong, and why).

The data is kept as data so that a registry update is a file change, not a
code change. Imports nothing from postgate, so every other module can use it.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

# RFC 3463 §2 syntax: no leading zeros, one to three digits per part; "X"
# stands for any class, as in the registry itself.
ENHANCED_SYNTAX: Final = re.compile(r"([245X])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})")

CLASSES: Final = MappingProxyType(
    {
        2: "Success",
        4: "Persistent transient failure (sending later may work)",
        5: "Permanent failure (the message or destination must change)",
    }
)
SUBJECTS: Final = MappingProxyType(
    {
        0: "Other or undefined status",
        1: "Addressing status (sender or recipient address)",
        2: "Mailbox status",
        3: "Mail system status",
        4: "Network and routing status",
        5: "Mail delivery protocol status",
        6: "Message content or media status",
        7: "Security or policy status",
    }
)


class Standing(enum.Enum):
    """Who defines a basic code: the answer to "may postgate send it"."""

    RFC5321 = "rfc5321"
    EXTENSION = "extension"
    NON_STANDARD = "non-standard"

    @property
    def label(self) -> str:
        return _STANDING_LABELS[self]


_STANDING_LABELS: Final = {
    Standing.RFC5321: "standard (RFC 5321)",
    Standing.EXTENSION: "standard (standards-track SMTP extension)",
    Standing.NON_STANDARD: "non-standard (no SMTP RFC defines it)",
}


class Verdict(enum.Enum):
    """How far the seed table's reading of a code can be trusted."""

    CORRECT = "correct"
    PARTLY_WRONG = "partly-wrong"
    WRONG = "wrong"
    NON_STANDARD = "non-standard"


@dataclass(frozen=True, slots=True)
class EnhancedCode:
    """One registry row; ``key`` keeps the registry's ``X`` class placeholder."""

    key: str
    subject: int
    detail: int
    title: str
    basic_codes: str
    reference: str
    description: str

    def with_class(self, klass: int) -> str:
        return f"{klass}.{self.subject}.{self.detail}"

    @property
    def success_only(self) -> bool:
        """True for details the registry only ever pairs with 2xx replies."""
        return self.basic_codes.startswith("2") and not re.search(r"\b[345]\d\d", self.basic_codes)


@dataclass(frozen=True, slots=True)
class BasicCode:
    code: int
    standing: Standing
    source: str
    meaning: str
    pairings: tuple[str, ...]

    @property
    def standard(self) -> bool:
        return self.standing is not Standing.NON_STANDARD


@dataclass(frozen=True, slots=True)
class SeedReading:
    code: int
    seed_meaning: str
    verdict: Verdict
    correction: str
    use: tuple[str, ...]


def read_table(name: str) -> list[dict[str, str]]:
    """Rows of one CSV file in ``postgate/data``; also used for the reply catalogue."""
    text = resources.files("postgate").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _split(cell: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in cell.split(";") if part.strip())


def _enhanced(row: dict[str, str]) -> EnhancedCode:
    match = ENHANCED_SYNTAX.fullmatch(row["code"])
    if match is None or match.group(1) != "X":
        raise ValueError(f"registry row {row['code']!r} is not an X.Y.Z code")
    return EnhancedCode(
        key=row["code"],
        subject=int(match.group(2)),
        detail=int(match.group(3)),
        title=row["sample_text"],
        basic_codes=row["associated_basic_status_codes"],
        reference=row["reference"],
        description=row["description"],
    )


def _basic(row: dict[str, str]) -> BasicCode:
    return BasicCode(
        code=int(row["code"]),
        standing=Standing(row["standing"]),
        source=row["source"],
        meaning=row["meaning"],
        pairings=_split(row["pairings"]),
    )


def _seed(row: dict[str, str]) -> SeedReading:
    return SeedReading(
        code=int(row["code"]),
        seed_meaning=row["seed_meaning"],
        verdict=Verdict(row["verdict"]),
        correction=row["correction"],
        use=_split(row["use"]),
    )


ENHANCED: Final = tuple(_enhanced(row) for row in read_table("enhanced-status-codes.csv"))
BASIC: Final = tuple(_basic(row) for row in read_table("basic-reply-codes.csv"))
SEED: Final = tuple(_seed(row) for row in read_table("seed-table.csv"))

_BY_KEY: Final[Mapping[str, EnhancedCode]] = MappingProxyType({e.key: e for e in ENHANCED})
_BY_CODE: Final[Mapping[int, BasicCode]] = MappingProxyType({b.code: b for b in BASIC})
_SEED_BY_CODE: Final[Mapping[int, SeedReading]] = MappingProxyType({s.code: s for s in SEED})

# The longest enhanced code a registered entry can produce, e.g. "5.7.30";
# the reply length budget in replies.py is computed from it.
LONGEST_ENHANCED: Final = max(len(e.key) for e in ENHANCED)


def enhanced(code: str) -> EnhancedCode | None:
    """Look a code up in the registry with its class replaced by ``X``.

    Accepts ``5.7.1`` and ``X.7.1``; anything not in RFC 3463 syntax (leading
    zeros, a class other than 2/4/5) is simply not registered.
    """
    match = ENHANCED_SYNTAX.fullmatch(code)
    if match is None:
        return None
    return _BY_KEY.get(f"X.{match.group(2)}.{match.group(3)}")


def subject_codes(subject: int) -> tuple[EnhancedCode, ...]:
    return tuple(e for e in ENHANCED if e.subject == subject)


def basic(code: int) -> BasicCode | None:
    return _BY_CODE.get(code)


def seed_reading(code: int) -> SeedReading | None:
    return _SEED_BY_CODE.get(code)


def is_standard(code: int) -> bool:
    """True when RFC 5321 or a standards-track extension defines the code."""
    known = _BY_CODE.get(code)
    return known is not None and known.standard


__all__ = [
    "BASIC",
    "CLASSES",
    "ENHANCED",
    "ENHANCED_SYNTAX",
    "LONGEST_ENHANCED",
    "SEED",
    "SUBJECTS",
    "BasicCode",
    "EnhancedCode",
    "SeedReading",
    "Standing",
    "Verdict",
    "basic",
    "enhanced",
    "is_standard",
    "read_table",
    "seed_reading",
    "subject_codes",
]
