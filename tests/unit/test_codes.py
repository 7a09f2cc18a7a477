"""`postgate codes`: every seed-table row, codes, reply lines, names, listings, usage."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import io

import pytest

from postgate.commands.codes import USAGE, main
from postgate.replies import registry
from postgate.replies.catalogue import NAMED


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


# The user's seed table (data/seed-table.csv), row by row, with the verdict
# docs/replies.md (Where the seed table is wrong) gives it; written out so the
# tool is checked against the written verdicts, not against its own data.
SEED_VERDICTS = [
    ("211", "correct"), ("214", "correct"), ("220", "correct"), ("221", "correct"),
    ("250", "correct"), ("251", "correct"), ("252", "correct"), ("354", "correct"),
    ("421", "correct"), ("450", "correct"), ("451", "correct"), ("452", "correct"),
    ("500", "correct"), ("501", "correct"), ("502", "correct"), ("503", "partly wrong"),
    ("504", "correct"), ("510", "wrong, not a standard code"),
    ("511", "wrong, not a standard code"), ("512", "wrong, not a standard code"),
    ("513", "wrong, not a standard code"), ("523", "wrong, not a standard code"),
    ("530", "partly wrong"), ("541", "wrong, not a standard code"), ("550", "correct"),
    ("551", "wrong"), ("552", "correct"), ("553", "partly wrong"), ("554", "partly wrong"),
]  # fmt: skip
SEED_FIXES = {
    "503": "530 5.7.0 Authentication required",
    "510": "550 5.1.1 User unknown",
    "511": "550 5.1.1 User unknown",
    "512": "550 5.1.2 Domain not found",
    "513": "553 5.1.3 Invalid recipient address syntax",
    "523": "552 5.2.3 Message exceeds mailbox size limit",
    "530": "554 5.7.1 Access denied: client blocked by local policy",
    "541": "550 5.7.1 Message rejected by policy",
    "551": "550 5.7.1 Relay access denied",
    "553": "550 5.7.25 Reverse DNS validation failed",
    "554": "550 5.1.1 User unknown",
}


class TestSeedTableRows:
    def test_every_seed_row_is_covered(self) -> None:
        """The expectations below cover each row of the package's seed data."""
        assert [code for code, _ in SEED_VERDICTS] == [str(s.code) for s in registry.SEED]

    @pytest.mark.parametrize(("code", "verdict"), SEED_VERDICTS)
    def test_seed_row_gets_its_verdict(self, code: str, verdict: str) -> None:
        """Each seed code is explained (exit 0) with the seed's reading and its verdict."""
        status, text = run(code)
        assert (0, True) == (status, f" -> {verdict}\n" in text)

    @pytest.mark.parametrize(("code", "fix"), sorted(SEED_FIXES.items()))
    def test_wrong_readings_name_the_reply_to_use(self, code: str, fix: str) -> None:
        assert fix in run(code)[1]

    @pytest.mark.parametrize(
        ("code", "standing"),
        [
            ("512", "non-standard (no SMTP RFC defines it)"),
            ("530", "standard (standards-track SMTP extension)"),
            ("552", "standard (RFC 5321)"),
        ],
    )
    def test_standing_is_stated(self, code: str, standing: str) -> None:
        """The first line says whether the code is standard and by which document."""
        assert run(code)[1].startswith(f"{code}: {standing}")

    def test_512_is_not_a_synonym_of_5_1_2(self) -> None:
        """The seed's '512 = 5.1.2' claim is refuted with the correct pairing."""
        text = run("512")[1]
        expected = "not a synonym of 5.1.2"
        assert (True, True) == (expected in text, "to mean 5.1.2, send 550 5.1.2" in text)

    def test_5_1_2_refutes_the_synonym_claim_too(self) -> None:
        """Asking for the enhanced code points back to the seed's wrong reading of 512."""
        status, text = run("5.1.2")
        assert (0, True) == (status, "the seed table calls 512 and 5.1.2 synonyms" in text)

    def test_standard_code_shows_its_enhanced_namesake_is_unrelated(self) -> None:
        """550 and 5.5.0 share digits but not meaning."""
        assert "not a synonym of 5.5.0" in run("550")[1]


class TestCodes:
    def test_enhanced_code_is_explained_with_class_subject_and_pairing(self) -> None:
        """5.7.1 shows its title, class, subject, a standard pairing and catalogue users."""
        status, text = run("5.7.1")
        wanted = [
            "Delivery not authorized",
            "class 5",
            "subject 7",
            "550 5.7.1",
            "relay_denied",
        ]
        assert (0, []) == (status, [w for w in wanted if w not in text])

    def test_registry_notation_is_accepted(self) -> None:
        """X.7.1 is explained as the registry row for any class."""
        status, text = run("X.7.1")
        assert (0, True) == (status, "class X: any of 2" in text)

    def test_rewritten_code_carries_the_note(self) -> None:
        """5.1.10 notes that Postfix rewrites it in a policy reply."""
        assert "rewrites 5.1.10" in run("5.1.10")[1]

    @pytest.mark.parametrize(
        ("query", "fragment"),
        [
            ("557", "unknown: not defined by RFC 5321"),
            ("599", "second digit is 0-5"),
            ("600", "three digits, the first 2-5"),
            ("5500", "three digits"),
            ("5.4.8", "registered: 5.4.0, 5.4.1"),
            ("5.9.0", "subjects are 0-7"),
            ("6.1.1", "not an enhanced status code"),
            ("5.07.1", "without leading zeros"),
        ],
    )
    def test_unknown_or_invalid_codes_exit_1(self, query: str, fragment: str) -> None:
        status, text = run(query)
        assert (1, True) == (status, fragment in text)

    def test_several_codes_are_explained_in_turn(self) -> None:
        status, text = run("552", "5.7.1")
        assert (0, True, True) == (status, text.startswith("552: "), "\n5.7.1: " in text)

    def test_one_unknown_code_makes_the_run_fail(self) -> None:
        """The exit status is the worst of all arguments."""
        assert 1 == run("552", "557")[0]


class TestReplyLines:
    def test_valid_line_is_explained_with_what_the_client_sees(self) -> None:
        """A whole reply line is checked, its codes explained and Postfix's wording shown."""
        status, text = run("554 5.7.1 Relay access denied")
        seen = "554 5.7.1 <someone@example.com>: Recipient address rejected: Relay access denied"
        assert (0, True, True) == (status, "valid numeric reply" in text, seen in text)

    def test_line_split_by_the_shell_is_joined(self) -> None:
        """Unquoted words after a code are read as one reply line."""
        assert run("554 5.7.1 Relay access denied") == run(
            "554", "5.7.1", "Relay", "access", "denied"
        )

    def test_invalid_line_exits_1_with_the_fix(self) -> None:
        """A class mismatch is refused and the corrected line suggested."""
        status, text = run("554 4.7.1 Relay access denied")
        assert (1, True) == (status, "write '554 5.7.1 Relay access denied'" in text)

    def test_non_standard_line_is_explained_with_a_warning(self) -> None:
        """A seed-table code in a line is valid for Postfix but warned about."""
        status, text = run("512 5.1.2 Domain not found")
        assert (0, True) == (status, "warning: 512 is not a standard SMTP reply code" in text)

    def test_gibberish_exits_1(self) -> None:
        """Words that are neither a code, a name nor an action are refused."""
        status, text = run("hello", "world")
        assert (1, True) == (status, "refused" in text)


class TestNamesAndListings:
    def test_named_reply_shows_scenario_and_line(self) -> None:
        status, text = run("greylisted")
        assert (0, True) == (status, "DEFER_IF_PERMIT 4.7.1 Greylisted, try again later" in text)

    def test_template_reply_shows_a_rendered_example(self) -> None:
        """Placeholders are filled with sample values in the client's view."""
        assert "Client host [192.0.2.9]" in run("dnsbl_listed")[1]

    def test_named_listing_has_every_name(self) -> None:
        """--named lists each catalogue entry with its action line."""
        status, text = run("--named")
        missing = [name for name, action in NAMED.items() if action.line not in text]
        assert (0, []) == (status, missing)

    def test_listing_has_every_basic_and_enhanced_code(self) -> None:
        """Without arguments the tool lists every basic code and every registry row."""
        status, text = run()
        keys = [f"  {e.key} " for e in registry.ENHANCED] + [
            f"  {b.code}  " for b in registry.BASIC
        ]
        assert (0, []) == (status, [key for key in keys if key not in text])


class TestUsage:
    @pytest.mark.parametrize("flag", ["-h", "--help"])
    def test_help_prints_usage(self, flag: str) -> None:
        assert (0, USAGE) == run(flag)

    @pytest.mark.parametrize("argv", [["--bogus"], ["552", "-x"], ["--named", "extra"]])
    def test_bad_options_exit_2(self, argv: list[str]) -> None:
        """Unknown or misplaced options are usage errors."""
        status, text = run(*argv)
        assert (2, True) == (status, text.endswith(USAGE))
