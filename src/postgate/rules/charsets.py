"""Character sets of a regex as bits, with the case folding ``re`` itself applies.

The backtracking check in `postgate.rules.patterns` asks one question of
every set: which characters can it match, and can two sets match the same
one? Under IGNORECASE that depends on Unicode case folding as ``re``
implements it (U+0130 and U+0131 match i, U+212A matches k, a range of
accented letters holds i and s), so rather than restating those rules, each
set is turned into a one-character pattern and ``re`` tries it on a probe
text.

A set becomes bits: one per ASCII code point, which ``re`` tries exactly, plus
four coarse classes for everything else. Non-ASCII characters can only be
told apart from their class through case, so the probe also holds every
cased character and its lower case, found with the functions sre folds by;
the rest match as themselves and get their class bit.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from typing import Any, Final

_sre: Any = importlib.import_module("_sre")  # the case mapping re compares characters by

# Bits 0..127 are ASCII code points; four more stand for non-ASCII classes.
U_DIGIT, U_ALPHA, U_SPACE, U_OTHER = (1 << 128, 1 << 129, 1 << 130, 1 << 131)
UNICODE: Final = U_DIGIT | U_ALPHA | U_SPACE | U_OTHER
ASCII: Final = (1 << 128) - 1
ALL: Final = ASCII | UNICODE

# The parse tree's opcodes that stand for one character out of a set.
SET_OPS: Final = frozenset({"LITERAL", "NOT_LITERAL", "ANY", "IN"})
# Only these flags change what a one-character set matches.
_SET_FLAGS: Final = re.IGNORECASE | re.ASCII | re.DOTALL
_CATEGORY: Final = {
    f"CATEGORY_{neg}{name}": "\\" + (code.upper() if neg else code)
    for name, code in (("DIGIT", "d"), ("SPACE", "s"), ("WORD", "w"))
    for neg in ("", "NOT_")
}
# One uncased character per non-ASCII class: \d, \s and \w answer alike for a whole class.
_SAMPLES: Final = "\u0663\u4e00\u2003\u20ac"


def set_bits(name: str, av: Any, flags: int) -> int:
    """The bits of one `SET_OPS` node, under the flags in force where it stands."""
    source, bits = _render(name, av)
    return bits if source is None else bits | _probe(source, flags & _SET_FLAGS)


def _render(name: str, av: Any) -> tuple[str | None, int]:
    """The set as a one-character pattern for re to try, and the classes of the
    uncased non-ASCII characters it matches as themselves (a superset)."""
    if name in {"LITERAL", "NOT_LITERAL"}:
        negate = "^" if name == "NOT_LITERAL" else ""
        return f"[{negate}{_code(av)}]", UNICODE if negate else _bit(av) & UNICODE
    items: list[tuple[str, Any]] = [("ANY", 0)]
    if name == "IN":
        items = [(str(op), item) for op, item in av]
    parts, bits = [], 0
    for kind, item in items:
        if kind == "LITERAL":
            parts.append(_code(item))
            bits |= _bit(item) & UNICODE
        elif kind == "RANGE":
            parts.append(f"{_code(item[0])}-{_code(item[1])}")
            bits |= UNICODE if item[1] >= 128 else 0
        elif kind in {"NEGATE", "ANY"}:
            parts.append("^" if kind == "NEGATE" else ".")
            bits |= UNICODE
        elif str(item) in _CATEGORY:
            parts.append(_CATEGORY[str(item)])
        else:
            return None, ALL
    return "".join(parts) if name == "ANY" else f"[{''.join(parts)}]", bits


def _code(code: int) -> str:
    return f"\\U{code:08x}"


@functools.lru_cache(maxsize=4096)
def _probe(source: str, flags: int) -> int:
    text, bits = probe_text()
    found = 0
    for match in re.compile(source, flags).finditer(text):
        found |= bits[match.start()]
    return found


@functools.cache
def probe_text() -> tuple[str, tuple[int, ...]]:
    """ASCII, the class samples, and every character whose matching case can change.

    sre compares a character's simple lower case with the set's (plus a few
    extra equivalences, all between cased characters), so a character that is
    not cased and no cased one's lower case matches only as itself.
    """
    cased = [c for c in range(128, sys.maxunicode + 1) if _sre.unicode_iscased(c)]
    codes = {*range(128), *cased, *map(_sre.unicode_tolower, cased), *map(ord, _SAMPLES)}
    ordered = sorted(codes)
    return "".join(map(chr, ordered)), tuple(_bit(c) for c in ordered)


def _bit(code: int) -> int:
    if code < 128:
        return 1 << code
    ch = chr(code)
    if ch.isdecimal():
        return U_DIGIT
    if ch.isalnum() or ch == "_":
        return U_ALPHA
    return U_SPACE if ch.isspace() else U_OTHER
