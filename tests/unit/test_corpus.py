"""Request files: the Postfix wire format with expectations in comments."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from postgate.wire.policy_files import (
    RECORDING_HEADER,
    CorpusError,
    parse_policy_text,
    parse_time,
    read_policy_file,
    whole_blocks,
)

if TYPE_CHECKING:
    from pathlib import Path

TWO = """\
# a file comment, not a request

# name: first
# expect: 554 5.7.1 Relay access denied
# expect-rule: RELAY
request=smtpd_access_policy
protocol_state=RCPT
recipient=a=b@example.org

# time: 1700000000.5
request=smtpd_access_policy
sender=
"""


class TestParsing:
    def test_blocks_become_cases_with_their_expectations(self) -> None:
        """Two blocks give two cases; the comment-only block is skipped."""
        first, second = parse_policy_text(TWO, "t.policy")
        assert (
            "first",
            "554 5.7.1 Relay access denied",
            "RELAY",
            3,
            {
                "request": "smtpd_access_policy",
                "protocol_state": "RCPT",
                "recipient": "a=b@example.org",
            },
        ) == (first.name, first.expect, first.expect_rule, first.line, first.request.as_dict())
        assert ("t.policy:10", None, None, 1700000000.5, "") == (
            second.name,
            second.expect,
            second.expect_rule,
            second.time,
            second.request["sender"],
        )

    def test_iso_time_without_zone_is_utc(self) -> None:
        (case,) = parse_policy_text("# time: 2023-11-14T22:13:20\nrequest=smtpd_access_policy\n")
        assert 1700000000.0 == case.time

    def test_action_prefix_in_expect_is_tolerated(self) -> None:
        """An expectation pasted from a log (`action=DUNNO`) reads as DUNNO."""
        (case,) = parse_policy_text("# expect: action=DUNNO\nrequest=x\n")
        assert "DUNNO" == case.expect

    def test_crlf_files_read_like_lf_files(self) -> None:
        (case,) = parse_policy_text("request=x\r\nsender=a@b\r\n\r\n")
        assert {"request": "x", "sender": "a@b"} == case.request.as_dict()

    def test_last_of_a_repeated_attribute_wins(self) -> None:
        """Same rule as the daemon's decoder."""
        (case,) = parse_policy_text("size=1\nsize=2\n")
        assert "2" == case.request["size"]

    def test_other_comments_are_ignored(self) -> None:
        (case,) = parse_policy_text("# seen in prod: yes\n# why not\nrequest=x\n")
        assert (None, 1) == (case.expect, len(case.request))


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("request=x\nnot an attribute\n", "f.policy:2: expected name=value"),
            ("request=x\n=value\n", "f.policy:2: expected name=value"),
            ("# expect: DUNNO\n\nrequest=x\n", "f.policy:1: an expectation without a request"),
            ("# expect: OK\n# expect: DUNNO\nrequest=x\n", "f.policy:2: second '# expect:'"),
            (
                "# time: yesterday\nrequest=x\n",
                "f.policy:1: '# time: yesterday': 'yesterday' is neither",
            ),
        ],
    )
    def test_malformed_files_name_file_and_line(self, text: str, message: str) -> None:
        with pytest.raises(CorpusError) as caught:
            parse_policy_text(text, "f.policy")
        assert str(caught.value).startswith(message)


class TestFiles:
    def test_invalid_utf8_survives_as_surrogates(self, tmp_path: Path) -> None:
        """Raw bytes in a recorded request replay unchanged (surrogateescape)."""
        path = tmp_path / "r.policy"
        path.write_bytes(b"request=smtpd_access_policy\nhelo_name=\xff\xfe\n\n")
        (case,) = read_policy_file(path)
        assert (b"\xff\xfe", str(path)) == (
            case.request["helo_name"].encode("utf-8", "surrogateescape"),
            case.source,
        )

    def test_empty_file_has_no_cases(self, tmp_path: Path) -> None:
        path = tmp_path / "e.policy"
        path.write_text("")
        assert [] == read_policy_file(path)


class TestRecordings:
    BLOCK = "request=smtpd_access_policy\nsender=a@example.com\n\n"

    def test_recording_cut_mid_block_loses_only_that_block(self) -> None:
        """A recording that a crash cut short reads as its whole blocks."""
        whole = RECORDING_HEADER + self.BLOCK
        assert whole == whole_blocks(whole + "request=smtpd_access_policy\nprotocol_st")

    def test_hand_written_file_without_final_blank_line_is_kept(self) -> None:
        """Only recordings are trimmed; a hand-written last block may end anywhere."""
        text = self.BLOCK.rstrip("\n")
        assert text == whole_blocks(text)

    def test_reading_a_cut_recording_yields_its_whole_blocks(self, tmp_path: Path) -> None:
        """read_policy_file drops the cut tail instead of reading half a request."""
        path = tmp_path / "r.policy"
        path.write_text(RECORDING_HEADER + self.BLOCK + "request=smtpd_access_policy\nsend")
        assert ["a@example.com"] == [case.request["sender"] for case in read_policy_file(path)]


class TestTimes:
    def test_times_are_unix_seconds_or_iso_in_utc(self) -> None:
        """A zone-less ISO time is UTC, never the local zone."""
        assert [60.0, 60.0, 3600.0] == [
            parse_time("60"),
            parse_time("1970-01-01T00:01:00"),
            parse_time("1970-01-01T02:00:00+01:00"),
        ]

    def test_unreadable_time_is_a_value_error(self) -> None:
        """Anything else is refused with the text quoted."""
        with pytest.raises(ValueError, match="'soon' is neither"):
            parse_time("soon")
