"""The code facts shipped as package data: enhanced registry, basic codes, seed readings."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import pytest

from postgate.replies import registry
from postgate.replies.sent import validate_reply_line

# RFC 5321 §4.2.2-§4.2.3 and the extension RFCs 3207, 4954, 7504, written out
# by hand so the data file is checked against the RFCs and the IANA registry
# rather than against itself.
RFC5321_CODES = {
    211, 214, 220, 221, 250, 251, 252, 354, 421, 450, 451, 452,
    455, 500, 501, 502, 503, 504, 550, 551, 552, 553, 554, 555,
}  # fmt: skip
EXTENSION_CODES = {235, 334, 432, 454, 521, 530, 534, 535, 538, 556}
SEED_CODES = [
    211, 214, 220, 221, 250, 251, 252, 354, 421, 450, 451, 452, 500, 501, 502,
    503, 504, 510, 511, 512, 513, 523, 530, 541, 550, 551, 552, 553, 554,
]  # fmt: skip
SEED_NON_STANDARD = {510, 511, 512, 513, 523, 541}


class TestEnhancedRegistry:
    def test_registry_has_81_rows_with_unique_keys(self) -> None:
        """81 distinct rows, X.0.0 to X.7.30 (docs/replies.md, The code data)."""
        keys = [entry.key for entry in registry.ENHANCED]
        assert (81, 81) == (len(keys), len(set(keys)))

    @pytest.mark.parametrize("entry", registry.ENHANCED, ids=lambda e: e.key)
    def test_every_entry_round_trips_through_lookup_in_every_class(
        self, entry: registry.EnhancedCode
    ) -> None:
        """An entry is found again by its X key and by the code in each class 2, 4 and 5."""
        codes = [entry.key] + [entry.with_class(klass) for klass in (2, 4, 5)]
        assert [entry] * 4 == [registry.enhanced(code) for code in codes]

    @pytest.mark.parametrize("entry", registry.ENHANCED, ids=lambda e: e.key)
    def test_every_entry_has_text_reference_and_a_known_subject(
        self, entry: registry.EnhancedCode
    ) -> None:
        """Each row carries a title, a reference and a description under a known subject."""
        filled = all((entry.title, entry.reference, entry.description, entry.basic_codes))
        assert (True, True) == (filled, entry.subject in registry.SUBJECTS)

    def test_subject_ranges_match_the_spec(self) -> None:
        """Details run X.0.0, X.1.0-10, X.2.0-4, X.3.0-6, X.4.0-7, X.5.0-6, X.6.0-10, X.7.0-30."""
        last = {s: max(e.detail for e in registry.subject_codes(s)) for s in range(8)}
        assert {0: 0, 1: 10, 2: 4, 3: 6, 4: 7, 5: 6, 6: 10, 7: 30} == last

    @pytest.mark.parametrize("code", ["5.07.1", "6.1.1", "5.7.1234", "5.7", "", "5.7.1 ", "x.7.1"])
    def test_malformed_codes_are_not_registered(self, code: str) -> None:
        """Codes outside RFC 3463 syntax never match, even if their numbers would."""
        assert registry.enhanced(code) is None

    @pytest.mark.parametrize("code", ["5.4.8", "5.7.31", "4.8.0", "5.2.5"])
    def test_well_formed_but_unregistered_codes_are_not_found(self, code: str) -> None:
        """X.4.8 and friends are well-formed but not registered (docs/replies.md, The code data)."""
        assert registry.enhanced(code) is None

    def test_longest_registered_code_has_six_characters(self) -> None:
        """X.1.10 and X.7.30 are the longest codes; the length budget depends on it."""
        assert registry.LONGEST_ENHANCED == 6

    def test_success_only_details_are_the_three_2xx_ones(self) -> None:
        """X.1.5, X.3.6 and X.6.4 are seen only with 2xx replies in the registry."""
        keys = {entry.key for entry in registry.ENHANCED if entry.success_only}
        assert {"X.1.5", "X.3.6", "X.6.4"} == keys


class TestBasicCodes:
    def test_rfc5321_codes_are_exactly_the_rfc_list(self) -> None:
        """The data's RFC 5321 codes are the 24 of RFC 5321 §4.2.2-§4.2.3."""
        found = {b.code for b in registry.BASIC if b.standing is registry.Standing.RFC5321}
        assert RFC5321_CODES == found

    def test_extension_codes_are_exactly_the_rfc_list(self) -> None:
        """Codes from standards-track extensions are those of RFC 3207, RFC 4954 and RFC 7504."""
        found = {b.code for b in registry.BASIC if b.standing is registry.Standing.EXTENSION}
        assert EXTENSION_CODES == found

    def test_seed_table_folk_codes_are_non_standard(self) -> None:
        """510, 511, 512, 513, 523 and 541 are not standard codes."""
        assert set() == {code for code in SEED_NON_STANDARD if registry.is_standard(code)}

    def test_unlisted_code_is_not_standard(self) -> None:
        assert (False, None) == (registry.is_standard(557), registry.basic(557))

    @pytest.mark.parametrize(
        "code", [b for b in registry.BASIC if not b.standard], ids=lambda b: str(b.code)
    )
    def test_every_non_standard_code_names_valid_standard_replies(
        self, code: registry.BasicCode
    ) -> None:
        """Each non-standard code points to at least one reply that passes the validator."""
        problems = [validate_reply_line(line) for line in code.pairings]
        assert (True, [[]] * len(code.pairings)) == (bool(code.pairings), problems)

    @pytest.mark.parametrize(
        "line", [line for b in registry.BASIC for line in b.pairings if line != "DUNNO"]
    )
    def test_every_typical_reply_passes_the_validator(self, line: str) -> None:
        """The replies `postgate codes` suggests are all ones postgate itself would send."""
        assert [] == validate_reply_line(line)


class TestSeedReadings:
    def test_every_seed_row_is_present_in_order(self) -> None:
        """The seed data has the user's 29 rows, in the order of the seed table."""
        assert SEED_CODES == [seed.code for seed in registry.SEED]

    def test_non_standard_verdict_matches_the_basic_code_data(self) -> None:
        """A row judged non-standard is exactly a code the basic data calls non-standard."""
        judged = {s.code for s in registry.SEED if s.verdict is registry.Verdict.NON_STANDARD}
        non_standard = {code for code in SEED_CODES if not registry.is_standard(code)}
        assert (SEED_NON_STANDARD, SEED_NON_STANDARD) == (judged, non_standard)

    def test_wrong_and_partly_wrong_rows_are_the_documented_ones(self) -> None:
        """551 wrong; 503, 530, 553, 554 partly (docs/replies.md, Where the seed table is wrong)."""
        verdicts = {s.code: s.verdict.value for s in registry.SEED if s.verdict.value != "correct"}
        expected = {503: "partly-wrong", 530: "partly-wrong", 551: "wrong"}
        expected |= {553: "partly-wrong", 554: "partly-wrong"}
        expected |= dict.fromkeys(SEED_NON_STANDARD, "non-standard")
        assert expected == verdicts

    @pytest.mark.parametrize(
        "line", [line for s in registry.SEED for line in s.use if line != "DUNNO"]
    )
    def test_every_suggested_reply_passes_the_validator(self, line: str) -> None:
        """What the seed corrections tell people to use is always a valid reply."""
        assert [] == validate_reply_line(line)

    def test_unknown_code_has_no_seed_reading(self) -> None:
        assert registry.seed_reading(555) is None
