"""Regex patterns: what the load-time check accepts, refuses, and why."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import importlib
import re
import time
import warnings
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from postgate.rules.charsets import probe_text
from postgate.rules.patterns import (
    FLAGS,
    MAX_SUBJECT,
    PatternError,
    compile_pattern,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

ACCEPTED = [
    r"^\d+\.\d+\.\d+\.\d+$",
    r"(^|[.-])(dyn|dynamic|dsl|adsl|ppp|pool|dhcp|cable)[0-9]*[.-]",
    r"([a-z0-9-]+\.)+example\.com$",
    r"^(?:[a-z0-9-]+\.)*example\.(com|net)$",
    r"([0-9]{1,3}[.-]){3}[0-9]{1,3}",
    r"\d{1,3}(\.\d{1,3}){3}",
    r"[a-z.]+\.[a-z]+",
    r"(com|net|org)+",
    r"(a|ab)+",
    r"^[^@]+@[^@]+$",
    r"\bdsl\b",
    r"^unknown$",
    r"(?-i:MX)",
    r".*",
    r"\w+\s+\w+",
    "^(?:[\u00c0-\u024f]+a)+$",  # no accented letter folds to a
    "^(?-i:(?:[\u00c0-\u024f]+i)+)$",  # nor, without folding, to i
    r"\.(com|co\.uk)$",
]

REFUSED = {
    r"(a+)+$": "a repeat inside a repeat",
    r"^(\w+\s?)*$": "a repeat inside a repeat",
    r"(x+x+)+y": "a repeat inside a repeat",
    r"(\d+\.?)+": "a repeat inside a repeat",
    r"(.*a){12}": "a repeat inside a repeat",
    r"(a*)*": "a repeated part can match nothing",
    r"(?:a?|b?)+": "a repeated part can match nothing",
    r"\d+\d+": "two repeats in a row",
    r"x.*y.*z": "two repeats in a row",
    r"a*b*a*": "two repeats in a row",
    r"(a|a)*b": "alternatives inside a repeat",
    r"(?:aa|a)+\.": "alternatives of different lengths inside a repeat",
    r"^(?:ab?(?:bc|c))+$": "alternatives of different lengths inside a repeat",
    r"(a)\1": "backreferences",
    r"(?=a)b": "lookahead and lookbehind",
    r"(?<!a)b": "negative lookahead",
    r"(a)?(?(1)b|c)": "conditional groups",
    r"(?:(?:(?:(?:(?:a{2}){2}){2}){2}){2})": "repeats nest more than 4 deep",
    r"[": "not a valid regular expression",
    r"a{2,1}": "not a valid regular expression",
}


# Under IGNORECASE, re treats U+0130 and U+0131 as i, U+017F as s, U+212A as k,
# and a non-ASCII range as holding the ASCII letters those fold to; (?-i:)
# turns folding off again. Each pattern here was accepted although two of its
# parts can take the same text; the value is the text that pumps it.
CASE_FOLDING = {
    "^(?:[\u00c0-\u024f]+i)+$": "\u0130",
    "^(?:[\u00c0-\u024f]+I)+$": "\u0131",
    "^(?:\u0130x|ix)+$": "ix",
    "^(?:[\u00c0-\u024f]x|ix)+$": "ix",
    "^(?-i:(?:[^ab]x|Ax)+)$": "Ax",
}


def first_slow_length(
    regex: re.Pattern[str], pump: str, end: str, bound: float, lengths: Iterable[int]
) -> int | None:
    """The first of ``lengths`` at which searching ``pump * k + end`` takes over ``bound`` s.

    The walk stops at the first slow length, and lengths grow slowly, so even
    an exponential pattern costs a few times ``bound``, not hours.
    """
    for length in lengths:
        subject = (pump * length)[: length - len(end)] + end
        started = time.perf_counter()
        regex.search(subject, 0, MAX_SUBJECT)
        if time.perf_counter() - started > bound:
            return length
    return None


class TestCaseFolding:
    @pytest.mark.parametrize("source", CASE_FOLDING)
    def test_overlaps_made_by_case_folding_are_refused(self, source: str) -> None:
        """A non-ASCII character that IGNORECASE equates with an ASCII one overlaps it."""
        with pytest.raises(PatternError):
            compile_pattern(source)

    @pytest.mark.parametrize(("source", "pump"), CASE_FOLDING.items())
    def test_each_takes_over_20_ms_on_a_40_character_helo(self, source: str, pump: str) -> None:
        """Why they must be refused: the bare regex backtracks exponentially.

        The finding: ``^(?:[\u00c0-\u024f]+i)+$`` on 40 dotted capital I's held
        the only thread for seconds, 1.6 times longer per added character.
        """
        regex = re.compile(source, FLAGS)
        assert first_slow_length(regex, pump, "!", 0.02, range(2, 41)) is not None


class TestProbe:
    def test_every_character_case_can_make_equal_is_probed(self) -> None:
        """re's extra case equivalences (i and U+0131, s and U+017F...) are all probed."""
        extra = importlib.import_module("re._casefix")._EXTRA_CASES
        codes = {code for key, others in extra.items() for code in (key, *others)}
        assert set() == codes - set(map(ord, probe_text()[0]))

    def test_the_non_ascii_characters_ignorecase_makes_ascii(self) -> None:
        """What the probe finds re folding to ASCII letters: i, s and k, no others."""
        text = probe_text()[0]
        assert "\u0130\u0131\u017f\u212a" == "".join(
            c for c in text if c >= "\x80" and re.fullmatch("[a-z]", c, FLAGS)
        )


class TestRedundantDotStar:
    @pytest.mark.parametrize(
        ("source", "better"),
        [(".*dsl.*", "dsl"), ("^.*\\.dynamic\\..*$", "\\.dynamic\\."), (".*x.*y", "x.*y")],
    )
    def test_the_refusal_offers_the_pattern_without_it(self, source: str, better: str) -> None:
        """Rules search anywhere in the value, so the .* on either side only costs time."""
        with pytest.raises(PatternError) as caught:
            compile_pattern(source)
        assert str(caught.value).startswith(
            "a leading or trailing .* is redundant, as the value is searched anywhere "
            f"(re.search): write /{better}/, which matches the same values"
        )
        assert better == compile_pattern(better).source

    def test_a_pattern_slow_without_them_keeps_its_own_reason(self) -> None:
        """Dropping the outer .* of .*\\d+\\d+.* leaves \\d+\\d+, which is refused as before."""
        with pytest.raises(PatternError) as caught:
            compile_pattern(".*\\d+\\d+.*")
        assert str(caught.value).startswith("two repeats in a row")


class TestSetWarnings:
    @pytest.mark.parametrize(
        ("source", "hint"),
        [
            ("[[:alpha:]]", "write [a-zA-Z] or [^\\W\\d_]"),
            ("^[[:alpha:]]+$", "write [a-zA-Z] or [^\\W\\d_]"),
            ("^[[:digit:]]+$", "write [0-9] or \\d"),
        ],
    )
    def test_posix_class_is_refused_with_a_python_spelling(self, source: str, hint: str) -> None:
        """re reads [[:alpha:]] as a set of [:alph followed by ], and warns; no warning leaks."""
        with warnings.catch_warnings(record=True) as leaked:
            warnings.simplefilter("always")
            with pytest.raises(PatternError) as caught:
                compile_pattern(source)
        assert [] == [str(w.message) for w in leaked]
        assert str(caught.value).startswith("POSIX classes such as [:")
        assert hint in str(caught.value)

    def test_other_set_warnings_are_refused_with_their_position(self) -> None:
        """&& inside a set may become an intersection in a future Python: escape it."""
        with warnings.catch_warnings(record=True) as leaked:
            warnings.simplefilter("always")
            with pytest.raises(PatternError) as caught:
                compile_pattern("[a&&b]")
        assert ([], "possible set intersection at position 2:") == (
            [str(w.message) for w in leaked],
            str(caught.value)[:40],
        )


class TestAccepted:
    @pytest.mark.parametrize("source", ACCEPTED)
    def test_common_admin_patterns_compile(self, source: str) -> None:
        """Anchored, delimited and class-based patterns pass the check."""
        assert source == compile_pattern(source).source


class TestRefused:
    @pytest.mark.parametrize(("source", "reason"), REFUSED.items())
    def test_catastrophic_or_irregular_patterns_are_refused(self, source: str, reason: str) -> None:
        """Each refusal starts with the sentence that names the problem."""
        with pytest.raises(PatternError) as caught:
            compile_pattern(source)
        assert str(caught.value).startswith(reason)

    def test_overlong_pattern_is_refused(self) -> None:
        """Patterns are short by nature; a 2 KB one is a mistake."""
        with pytest.raises(PatternError) as caught:
            compile_pattern("a" * 2000)
        assert "longer than 1000 characters" == str(caught.value)


class TestSearch:
    def test_case_insensitive_by_default(self) -> None:
        """Host names and HELO are case-insensitive, so patterns are too."""
        assert compile_pattern("^mail$").search("MAIL")

    def test_a_character_past_the_cap_is_not_seen(self) -> None:
        """The cap bounds the work of every search: only the first 1024 characters count."""
        pattern = compile_pattern("x$")
        at_cap = "a" * (MAX_SUBJECT - 1) + "x"
        assert (True, False) == (pattern.search(at_cap), pattern.search("a" + at_cap))

    def test_padding_does_not_hide_a_match_at_the_start(self) -> None:
        """A long value still matches when its first 1024 characters do (fail closed)."""
        pattern = compile_pattern("^localhost")
        assert (True, True) == (
            pattern.search("localhost" + "x" * 5000),
            pattern.search("LOCALHOST" + "." * (MAX_SUBJECT - 9)),
        )

    def test_dollar_matches_at_the_cut(self) -> None:
        """Past 1024 characters the value is searched as if it ended at the cut."""
        pattern = compile_pattern(r"^\d+\.\d+\.\d+\.\d+$")
        head = "1" * (MAX_SUBJECT - 6) + ".2.3.4"
        assert (True, True, False) == (
            pattern.search(head + "x" * 4000),
            pattern.search(head + ".5"),
            pattern.search(head[1:] + "x" * 4000),
        )


# ---- search for accepted patterns that are slow ---------------------------
#
# A small grammar of what admins write (literals, classes, non-ASCII ranges and
# the characters IGNORECASE folds to ASCII, groups, alternatives, (?-i:) and
# quantifiers), and subjects that repeat a short pump of the same characters
# up to MAX_SUBJECT. An accepted pattern must stay under BOUND per search.

BOUND = 0.05
LITERALS = ["a", "i", "s", "k", "x", "\\.", "\u0130", "\u0131", "\u017f", "\u212a"]
CLASSES = [
    "\\w", "\\d", ".", "[a-z]", "[^ab]", "[0-9.]", "[a-zé]", "[^\\x00-\\x7f]",
    "[\u00c0-\u024f]", "[\u0100-\u017f]", "[\u2100-\u214f]",
]  # fmt: skip
QUANTIFIERS = ["", "", "+", "*", "?", "{1,3}"]
REPEATS = ["+", "*", "{1,3}"]
ALPHABET = "aAbiIsSkKx-. 0_é\u0130\u0131\u017f\u212a\u00c0"

# Two levels deep: what admins write, and where backtracking lives.
_PIECE = st.tuples(st.sampled_from(LITERALS + CLASSES), st.sampled_from(QUANTIFIERS)).map("".join)
_BODY = st.lists(_PIECE, min_size=1, max_size=2).map("".join)
_GROUP = st.tuples(
    st.one_of(
        _BODY.map("(?:{})".format),
        st.tuples(_BODY, _BODY).map("(?:{0[0]}|{0[1]})".format),
        _BODY.map("(?-i:{})".format),
    ),
    st.sampled_from(REPEATS),
).map("".join)
PATTERNS = st.tuples(
    st.sampled_from(["", "^"]),
    st.lists(st.one_of(_GROUP, _PIECE, _GROUP), min_size=1, max_size=2).map("".join),
    st.sampled_from(["", "$", "$", "$"]),
).map("".join)


def _lengths() -> Iterator[int]:
    length = 2
    while length < MAX_SUBJECT:
        yield length
        length += max(1, length // 8)
    yield MAX_SUBJECT


def _shared(source: str) -> str:
    """The characters two of the pattern's atoms can take: the pumps likeliest to be slow."""
    atoms = [(re.compile(a), re.compile(a, FLAGS)) for a in LITERALS + CLASSES if a in source]
    shared = [
        c for c in ALPHABET if sum(bool(s.fullmatch(c) or i.fullmatch(c)) for s, i in atoms) > 1
    ]
    return "".join(shared) or ALPHABET


def _seconds(regex: re.Pattern[str], subject: str) -> float:
    started = time.perf_counter()
    regex.search(subject, 0, MAX_SUBJECT)
    return time.perf_counter() - started


class TestNoSlowPatternPasses:
    @settings(max_examples=1000, deadline=1000)
    @given(
        source=PATTERNS,
        picks=st.lists(st.integers(0, 255), min_size=1, max_size=3),
        end=st.sampled_from([*ALPHABET, "!"]),
    )
    @example(source="^(?:[\u00c0-\u024f]+i)+$", picks=[0], end="!")  # the finding
    @example(source="^(?:[\u00c0-\u024f]?i)+x", picks=[3], end="A")  # found by this test
    @example(source="(?:aa|a)+\\.", picks=[0], end="a")  # found by this test
    def test_accepted_patterns_search_the_longest_subject_fast(
        self, source: str, picks: list[int], end: str
    ) -> None:
        """Whatever the check accepts searches a pumped subject of any length in BOUND.

        The pump repeats characters two parts of the pattern can both take
        (``picks`` index them), as an attacker would.
        """
        try:
            pattern = compile_pattern(source)
        except PatternError:
            return
        shared = _shared(source)
        pump = "".join(shared[i % len(shared)] for i in picks)
        slow = first_slow_length(pattern.regex, pump, end, BOUND, _lengths())
        if slow is not None:  # confirm: the machine is shared, one slow run may be noise
            subject = (pump * slow)[: slow - len(end)] + end
            seconds = min(_seconds(pattern.regex, subject) for _ in range(3))
            assert seconds <= BOUND, f"{subject!r} took {seconds:.3f} s"
