"""Regular expressions that stay fast on hostile input, checked at load.

Python's ``re`` backtracks, so a careless pattern such as ``(a+)+$`` or
``.*x.*y`` can take seconds on a crafted 1 KB HELO name. Rather than adding a
compiled RE2 dependency, postgate keeps ``re`` and refuses, at load, every
pattern whose backtracking can blow up, with a sentence saying why:

* backreferences, lookaround and conditional groups (not regular at all);
* a repeated part that can match nothing (``(a*)*``);
* two parts that can hand the same characters back and forth: repeats
  adjacent (``\\d+\\d+``, ``x.*y.*z``) or nested (``(a+)+``), alternatives
  inside a repeat that start alike (``(a|a)*``) or differ in length
  (``(aa|a)+``);
* whatever ``re`` warns about (``[[:alpha:]]``), as the warning would only
  reach stderr.

The check works on ``re``'s own parse tree with each character set reduced to
bits, as `postgate.rules.charsets` asks them of ``re`` itself, so case folding
is what ``re`` does (under IGNORECASE, U+212A is k). The check errs towards
refusing. What passes costs at most O(n^2) in the value length, and only the
first `MAX_SUBJECT` characters of a value are searched, which bounds every
search. Searching a prefix rather than refusing
long values keeps the cap fail-closed: padding a HELO cannot hide
``localhost`` from a blocking pattern, nor make a negated one true.
"""

from __future__ import annotations

import importlib
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Final

from postgate.rules.charsets import ALL, SET_OPS, set_bits

_parser: Any = importlib.import_module("re._parser")  # stdlib; no public API for the tree

MAX_PATTERN: Final = 1000
MAX_SUBJECT: Final = 1024
FLAGS: Final = re.IGNORECASE

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
    tree, regex = _parse(source)
    try:
        _walk(tree)
    except PatternError as exc:
        raise _offer_shorter(source, exc) from None
    return Pattern(source, regex)


def _parse(source: str) -> tuple[Any, re.Pattern[str]]:
    # re warns through the warnings module, which prints to stderr: the
    # warning becomes the refusal instead. Parsing first warns every time,
    # where re.compile's cache would stay silent for a pattern seen before.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tree = _parser.parse(source, FLAGS)
            regex = re.compile(source, FLAGS)
        except re.error as exc:
            raise PatternError(f"not a valid regular expression: {exc}") from None
    # re warns in these categories; catch_warnings is process-wide, and a reload
    # parses in a thread, so other warnings are the reactor's, not the pattern's.
    ours = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    if ours:
        raise PatternError(_warned(str(ours[0].message), source))
    return tree, regex


_POSIX: Final = re.compile(r"\[:(\w+):\]")
_SPELLINGS: Final = {"alpha": "[a-zA-Z] or [^\\W\\d_]", "digit": "[0-9] or \\d", "space": "\\s"}


def _warned(message: str, source: str) -> str:
    posix = _POSIX.search(source)
    if posix and message.startswith("Possible nested set"):
        name = posix.group(1)
        spelling = _SPELLINGS.get(name, "the characters in a set, e.g. [a-zA-Z] for [:alpha:]")
        return (
            f"POSIX classes such as [:{name}:] are not supported by Python's re (it reads "
            f"[[:{name}:] as one set of characters, then a literal ]); write {spelling}"
        )
    return (
        f"{message[:1].lower()}{message[1:]}: Python's re warns that a future version may "
        "read this set differently; escape the character"
    )


def _offer_shorter(source: str, refusal: PatternError) -> PatternError:
    """Rules use re.search, so an outer .* only adds backtracking: offer the pattern without."""
    shorter = source
    for prefix in ("^.*?", "^.*", ".*?", ".*"):
        if shorter.startswith(prefix):
            shorter = shorter.removeprefix(prefix)
            break
    for suffix in (".*?$", ".*$", ".*?", ".*"):
        cut = len(shorter) - len(suffix)
        if shorter.endswith(suffix) and (cut - len(shorter[:cut].rstrip("\\"))) % 2 == 0:
            shorter = shorter[:cut]
            break
    if shorter in {"", source}:
        return refusal
    try:
        _walk(_parse(shorter)[0])
    except PatternError:
        return refusal
    return PatternError(
        "a leading or trailing .* is redundant, as the value is searched anywhere "
        f"(re.search): write /{shorter}/, which matches the same values and stays fast"
    )


# ---- the tree, with character sets as bits --------------------------------
#
# The tree is first rewritten with every character set replaced by ("SET",
# bits) (`postgate.rules.charsets`), computed under the flags in force where
# it stands ((?-i:...) turns folding off).

Node = tuple[str, Any]
_REPEATS: Final = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


def _walk(tree: Any) -> None:
    _sequence(_normal(list(tree), tree.state.flags), (), loops=0)


def _normal(items: list[tuple[Any, Any]], flags: int) -> list[Node]:
    return [_normal_item(str(op), av, flags) for op, av in items]


def _normal_item(name: str, av: Any, flags: int) -> Node:
    if name in SET_OPS:
        return ("SET", set_bits(name, av, flags))
    if name == "SUBPATTERN":
        return (name, _normal(list(av[3]), (flags | av[1]) & ~av[2]))
    if name == "ATOMIC_GROUP":
        return (name, _normal(list(av), flags))
    if name == "BRANCH":
        # Alternatives of different lengths act as an optional part: (aa|a) is aa?.
        widths = {alt.getwidth() for alt in av[1]}
        uneven = len(widths) > 1 or any(low != high for low, high in widths)
        return (name, ([_normal(list(alt), flags) for alt in av[1]], uneven))
    if name in _REPEATS:
        return (name, (av[0], av[1], _normal(list(av[2]), flags)))
    return (name, av)


# ---- first characters, emptiness, all characters --------------------------


def _children(name: str, av: Any) -> list[list[Node]]:
    if name == "BRANCH":
        return list(av[0])
    if name in {"SUBPATTERN", "ATOMIC_GROUP"}:
        return [av]
    if name in _REPEATS:
        return [av[2]] if av[1] > 0 else []
    return []


def _nullable(items: list[Node]) -> bool:
    return all(_nullable_item(name, av) for name, av in items)


def _nullable_item(name: str, av: Any) -> bool:
    if name == "SET":
        return False
    if name == "BRANCH":
        return any(_nullable(alt) for alt in av[0])
    if name in _REPEATS and av[0] == 0:
        return True
    return all(_nullable(child) for child in _children(name, av))


def _first(items: list[Node]) -> int:
    bits = 0
    for name, av in items:
        bits |= av if name == "SET" else _first_of_children(name, av)
        if not _nullable_item(name, av):
            break
    return bits


def _first_of_children(name: str, av: Any) -> int:
    bits = 0
    for child in _children(name, av):
        bits |= _first(child)
    return bits


def _chars(items: list[Node]) -> int:
    bits = 0
    for name, av in items:
        if name == "SET":
            bits |= av
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
_NESTED: Final = (
    "a repeat inside a repeat can match the same text in many ways (like (a+)+); end "
    "each repetition with a character the inner part cannot match, e.g. ([a-z0-9-]+\\.)+"
)
_UNEVEN: Final = (
    "alternatives of different lengths inside a repeat can split the same text in many "
    "ways (like (aa|a)+ or (ab?(bc|c))+); make them the same length, or end each "
    "repetition with a character nothing before it can match"
)
_ADJACENT: Final = (
    "two repeats in a row can match the same characters (like \\d+\\d+ or x.*y.*z), which "
    "makes matching slow; separate them by a character the second cannot match, or use "
    "a class such as [^y]*"
)


def _sequence(items: list[Node], state: Open, loops: int) -> Open:
    for name, av in items:
        state = _item(name, av, state, loops)
    return state


def _item(name: str, av: Any, state: Open, loops: int) -> Open:
    if name == "SET":
        return _after_char(av, state)
    if name in _REFUSED:
        raise PatternError(_REFUSED[name])
    if name == "AT":
        return state
    if name == "BRANCH":
        return _branch(av, state, loops)
    if name in {"SUBPATTERN", "ATOMIC_GROUP"}:
        return _sequence(av, state, loops)
    if name in _REPEATS:
        return _repeat(av, state, loops)
    raise PatternError(f"{name.lower()} is not supported")


def _after_char(bits: int, state: Open) -> Open:
    """A mandatory character closes the repeats that cannot take it."""
    return _merge(tuple((open_, seps | bits) for open_, seps in state if open_ & bits))


def _branch(av: Any, state: Open, loops: int) -> Open:
    alternatives, uneven = av[0], av[1] and loops > 0  # outside a repeat: a constant factor
    if loops:
        _check_alternatives(alternatives)
    chars = _chars([("BRANCH", av)])
    if uneven and _clashes(_first_of_children("BRANCH", av), chars, state):
        raise PatternError(_UNEVEN)
    out: Open = ()
    for alt in alternatives:
        out += _sequence(alt, state, loops)
    return _merge((*out, (chars, 0)) if uneven else out)


def _check_alternatives(alternatives: list[list[Node]]) -> None:
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
    low, high, body = av
    if high == 0:
        return state
    if high > 1 and _nullable(body):
        raise PatternError("a repeated part can match nothing (like (a*)*); make it match text")
    first, variable = _first(body), high != low
    if variable and _clashes(first, _chars(body), state):
        raise PatternError(_NESTED if loops > 0 else _ADJACENT)
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


def _iterate(body: list[Node], state: Open, loops: int) -> Open:
    """Walk the body again after itself until no new open repeat appears."""
    for _ in range(ALL.bit_length()):
        again = _merge(state + _sequence(body, state, loops))
        if again == state:
            break
        state = again
    return state


def _clashes(first: int, chars: int, state: Open) -> bool:
    return any(first & open_ and (not seps or chars & seps) for open_, seps in state)


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
