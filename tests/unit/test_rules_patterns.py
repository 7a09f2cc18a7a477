"""Regex patterns: what the load-time check accepts, refuses, and why."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import pytest

from postgate.rules.patterns import MAX_SUBJECT, PatternError, compile_pattern

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
    r".*x.*y": "two repeats in a row",
    r"a*b*a*": "two repeats in a row",
    r"(a|a)*b": "alternatives inside a repeat",
    r"(a)\1": "backreferences",
    r"(?=a)b": "lookahead and lookbehind",
    r"(?<!a)b": "negative lookahead",
    r"(a)?(?(1)b|c)": "conditional groups",
    r"(?:(?:(?:(?:(?:a{2}){2}){2}){2}){2})": "repeats nest more than 4 deep",
    r"[": "not a valid regular expression",
    r"a{2,1}": "not a valid regular expression",
}


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
