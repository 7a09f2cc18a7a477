"""Regular expressions that stay fast on hostile input, checked at load.

Python's ``re`` backtracks, so a careless pattern such as ``(a+)+$`` or
``.*x.*y`` can take seconds on a crafted 1 KB HELO name. Rather than adding a
compiled RE2 dependency, postgate keeps ``re`` and refuses, at load, every
pattern whose backtracking can blow up, with a sentence saying why:

* backreferences, lookaround and conditional groups (not regular at all);
* a repeated part that can match nothing (``(a*)*``);
* two repeats that can hand the same characters back and forth: adjacent
  (``\\d+\\d+``, ``.*x.*``), nested (``(a+)+``), or alternatives inside a
  repeat that start alike (``(a|ab)+``).

The check works on ``re``'s own parse tree with character classes reduced to
bit sets over ASCII plus four coarse non-ASCII classes, and errs towards
refusing. What passes costs at most O(n^2) in the value length, and only
the first `MAX_SUBJECT` characters of a value are searched, which bounds
every search. Searching a prefix rather than refusing long values keeps the
cap fail-closed: padding a HELO cannot hide ``localhost`` from a blocking
pattern, nor make a negated one true.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

_parser: Any = importlib.import_module("re._parser")  # stdlib; no public API for the tree

MAX_PATTERN: Final = 1000
MAX_SUBJECT: Final = 1024
FLAGS: Final = re.IGNORECASE

# Bits 0..127 are ASCII code points; four more stand for non-ASCII classes.
U_DIGIT, U_ALPHA, U_SPACE, U_OTHER = (1 << 128, 1 << 129, 1 << 130, 1 << 131)
UNICODE: Final = U_DIGIT | U_ALPHA | U_SPACE | U_OTHER
ASCII: Final = (1 << 128) - 1
ALL: Final = ASCII | UNICODE
_MAX_GROUPS: Final = 8
# Each level of repeats is walked a few times to reach its fixpoint, so the
# check's own cost grows with this power; real patterns nest two deep.
MAX_NESTING: Final = 4


class PatternError(ValueError):
    """A pattern that does not compile or could backtrack without bound."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A checked regex: case-insensitive, searched anywhere in the value's head.

    The head is the first `MAX_SUBJECT` characters; ``$`` matches where it
    ends, as if the value stopped there.
    """

    source: str
    regex: re.Pattern[str] = field(compare=False)

    def search(self, value: str) -> bool:
        return self.regex.search(value, 0, MAX_SUBJECT) is not None


def compile_pattern(source: str) -> Pattern:
    """Compile ``source`` or raise `PatternError` with a reason an admin can act on."""
    if len(source) > MAX_PATTERN:
        raise PatternError(f"longer than {MAX_PATTERN} characters")
    try:
        regex = re.compile(source, FLAGS)
        tree = _parser.parse(source, FLAGS)
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from None
    _sequence(list(tree), (), loops=0)
    return Pattern(source, regex)


# ---- character sets -------------------------------------------------------


def _ascii_set(test: Any) -> int:
    return sum(1 << c for c in range(128) if test(chr(c)))


_DIGITS: Final = _ascii_set(str.isdigit)
_SPACES: Final = _ascii_set(str.isspace)
_WORD: Final = _ascii_set(lambda c: c.isalnum() or c == "_")
_CATEGORIES: Final = {
    "CATEGORY_DIGIT": _DIGITS | U_DIGIT,
    "CATEGORY_NOT_DIGIT": ALL & ~(_DIGITS | U_DIGIT),
    "CATEGORY_SPACE": _SPACES | U_SPACE,
    "CATEGORY_NOT_SPACE": ALL & ~(_SPACES | U_SPACE),
    "CATEGORY_WORD": _WORD | U_DIGIT | U_ALPHA,
    "CATEGORY_NOT_WORD": ALL & ~(_WORD | U_DIGIT | U_ALPHA),
}


def _char(code: int) -> int:
    """The set one literal matches, with case folded (always, to err safe)."""
    ch = chr(code)
    bits = 0
    for variant in {ch, ch.lower(), ch.upper()}:
        if len(variant) == 1 and ord(variant) < 128:
            bits |= 1 << ord(variant)
        else:
            bits |= _unicode_class(variant[0])
    if ch.lower() in "ks":  # KELVIN SIGN and LONG S fold to k and s
        bits |= U_ALPHA
    return bits


def _unicode_class(ch: str) -> int:
    if ch.isdecimal():
        return U_DIGIT
    if ch.isalnum() or ch == "_":
        return U_ALPHA
    return U_SPACE if ch.isspace() else U_OTHER


def _range(low: int, high: int) -> int:
    bits = 0
    for code in range(low, min(high, 127) + 1):
        bits |= _char(code)
    return bits | (UNICODE if high >= 128 else 0)


def _class(items: list[tuple[Any, Any]]) -> int:
    bits, negate = 0, False
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            bits |= _char(av)
        elif name == "RANGE":
            bits |= _range(*av)
        elif name == "CATEGORY":
            bits |= _CATEGORIES.get(str(av), ALL)
        else:
            bits = ALL
    # A negated class keeps every non-ASCII class: a superset is the safe side.
    return (ALL & ~bits) | UNICODE if negate else bits


def _charset(name: str, av: Any) -> int | None:
    if name == "LITERAL":
        return _char(av)
    if name == "NOT_LITERAL":
        return (ALL & ~(1 << av if av < 128 else 0)) | UNICODE
    if name == "ANY":
        return ALL
    if name == "IN":
        return _class(av)
    return None


# ---- first characters, emptiness, all characters --------------------------


def _children(name: str, av: Any) -> list[list[tuple[Any, Any]]]:
    if name == "BRANCH":
        return [list(alt) for alt in av[1]]
    if name == "SUBPATTERN":
        return [list(av[3])]
    if name == "ATOMIC_GROUP":
        return [list(av)]
    if name in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
        return [list(av[2])] if av[1] > 0 else []
    return []


def _nullable(items: list[tuple[Any, Any]]) -> bool:
    return all(_nullable_item(str(op), av) for op, av in items)


def _nullable_item(name: str, av: Any) -> bool:
    if _charset(name, av) is not None:
        return False
    if name == "BRANCH":
        return any(_nullable(alt) for alt in _children(name, av))
    if name in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"} and av[0] == 0:
        return True
    return all(_nullable(child) for child in _children(name, av))


def _first(items: list[tuple[Any, Any]]) -> int:
    bits = 0
    for op, av in items:
        name = str(op)
        direct = _charset(name, av)
        bits |= direct if direct is not None else _first_of_children(name, av)
        if not _nullable_item(name, av):
            break
    return bits


def _first_of_children(name: str, av: Any) -> int:
    bits = 0
    for child in _children(name, av):
        bits |= _first(child)
    return bits


def _chars(items: list[tuple[Any, Any]]) -> int:
    bits = 0
    for op, av in items:
        name = str(op)
        direct = _charset(name, av)
        if direct is not None:
            bits |= direct
        for child in _children(name, av):
            bits |= _chars(child)
    return bits


# ---- the walk -------------------------------------------------------------
#
# State: the repeats that are still "open" after the text matched so far, as
# (chars they could still take, separators seen since) pairs. A later repeat
# that could take the same characters makes the split between them ambiguous,
# unless a mandatory separator lies between them that the later repeat cannot
# cross (``[a-z.]+\.[a-z]+`` is fine: each try of the second stops at a dot).

Open = tuple[tuple[int, int], ...]
_REFUSED: Final = {
    "GROUPREF": "backreferences (\\1) are not allowed",
    "GROUPREF_EXISTS": "conditional groups (?(1)...) are not allowed",
    "ASSERT": "lookahead and lookbehind are not allowed",
    "ASSERT_NOT": "negative lookahead and lookbehind are not allowed",
}


def _sequence(items: list[tuple[Any, Any]], state: Open, loops: int) -> Open:
    for op, av in items:
        state = _item(str(op), av, state, loops)
    return state


def _item(name: str, av: Any, state: Open, loops: int) -> Open:
    direct = _charset(name, av)
    if direct is not None:
        return _after_char(direct, state)
    if name in _REFUSED:
        raise PatternError(_REFUSED[name])
    if name == "AT":
        return state
    if name == "BRANCH":
        return _branch(av, state, loops)
    if name in {"SUBPATTERN", "ATOMIC_GROUP"}:
        return _sequence(_children(name, av)[0], state, loops)
    if name in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
        return _repeat(av, state, loops)
    raise PatternError(f"{name.lower()} is not supported")


def _after_char(bits: int, state: Open) -> Open:
    """A mandatory character closes the repeats that cannot take it."""
    return _merge(tuple((open_, seps | bits) for open_, seps in state if open_ & bits))


def _branch(av: Any, state: Open, loops: int) -> Open:
    alternatives = _children("BRANCH", av)
    if loops:
        _check_alternatives(alternatives)
    out: Open = ()
    for alt in alternatives:
        out += _sequence(alt, state, loops)
    return _merge(out)


def _check_alternatives(alternatives: list[list[tuple[Any, Any]]]) -> None:
    """Inside a repeat, two alternatives that can match the same text multiply."""
    seen, empty = 0, False
    for alt in alternatives:
        first, nullable = _first(alt), _nullable(alt)
        if first & seen or (nullable and empty):
            raise PatternError(
                "alternatives inside a repeat can match the same text, so the repeat "
                "can split it in many ways; make them start with different characters"
            )
        seen, empty = seen | first, empty or nullable


def _repeat(av: Any, state: Open, loops: int) -> Open:
    low, high, body = av[0], av[1], list(av[2])
    if high == 0:
        return state
    if high > 1 and _nullable(body):
        raise PatternError("a repeated part can match nothing (like (a*)*); make it match text")
    first, variable = _first(body), high != low
    if variable:
        _check_clash(first, _chars(body), state, nested=loops > 0)
    inner = loops + (high > 1)
    if inner > MAX_NESTING:
        raise PatternError(f"repeats nest more than {MAX_NESTING} deep")
    out = _sequence(body, state, inner)
    if high > 1:
        out = _iterate(body, out, inner)
    if low == 0:
        out += state
    if variable:
        out += ((first, 0),)
    return _merge(out)


def _iterate(body: list[tuple[Any, Any]], state: Open, loops: int) -> Open:
    """Walk the body again after itself until no new open repeat appears."""
    for _ in range(ALL.bit_length()):
        again = _merge(state + _sequence(body, state, loops))
        if again == state:
            break
        state = again
    return state


def _check_clash(first: int, chars: int, state: Open, *, nested: bool) -> None:
    for open_, seps in state:
        if first & open_ and (not seps or chars & seps):
            if nested:
                raise PatternError(
                    "a repeat inside a repeat can match the same text in many ways "
                    "(like (a+)+); end each repetition with a character the inner part "
                    "cannot match, e.g. ([a-z0-9-]+\\.)+"
                )
            raise PatternError(
                "two repeats in a row can match the same characters (like \\d+\\d+ or "
                ".*x.*), which makes matching slow; separate them by a character the "
                "second cannot match, or use a class such as [^x]*"
            )


def _merge(state: Open) -> Open:
    """Deduplicate, and fold a long state into one pair (a superset, still safe)."""
    merged: dict[int, int] = {}
    for open_, seps in state:
        merged[open_] = merged[open_] & seps if open_ in merged else seps
    pairs = tuple(sorted(merged.items()))
    if len(pairs) <= _MAX_GROUPS:
        return pairs
    open_all, seps_all = 0, ALL
    for open_, seps in pairs:
        open_all, seps_all = open_all | open_, seps_all & seps
    return ((open_all, seps_all),)
