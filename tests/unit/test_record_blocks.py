"""The one block formatter (the writer's): the time line, copied lines, odd records."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from postgate.record.blocks import Format, format_time
from postgate.wire.codec import PolicyRequest
from postgate.wire.policy_files import parse_policy_text, read_policy_file
from tests.unit.support.records import (
    NOW,
    moments,
    on_reactor,
    ports,
    received,
    recorder,
    settings,
    turn,
)

if TYPE_CHECKING:
    from pathlib import Path


def block(
    req: PolicyRequest, answer: str, rule: str, now: float, *, decisions: bool = True
) -> bytes:
    shape = Format(decisions)
    return shape.block(req.wire or req.raw, answer, rule, now)


def time_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].decode()


class TestTimeLine:
    def test_time_line_is_format_time_for_every_moment(self) -> None:
        """Rounding edges and times before 1970 included: the line format_time writes."""
        req = received()
        values = moments()
        lines = [time_line(block(req, "DUNNO", "R", now)) for now in values]
        assert [f"# time: {format_time(now)}" for now in values] == lines

    def test_half_microseconds_round_to_even(self) -> None:
        """1/128 s is 7812.5 us and 3/128 s is 23437.5 us: both go to the even neighbour."""
        lines = [time_line(block(received(), "DUNNO", "R", 1772366400 + j / 128)) for j in (1, 3)]
        expected = [
            "# time: 2026-03-01T12:00:00.007812Z",
            "# time: 2026-03-01T12:00:00.023438Z",
        ]
        assert expected == lines

    def test_microseconds_rounding_up_carry_into_the_next_second(self) -> None:
        """x.9999996 is written as second x+1, not as x.1000000."""
        line = time_line(block(received(), "DUNNO", "R", 1772366399.9999996))
        assert "# time: 2026-03-01T12:00:00.000000Z" == line

    @pytest.mark.parametrize("now", [math.nan, math.inf, 1e20])
    def test_time_no_calendar_can_show_makes_no_block(self, now: float) -> None:
        """NaN, infinity and years beyond 9999 raise: the recorder counts such a record."""
        with pytest.raises((ValueError, OverflowError, OSError)):
            block(received(), "DUNNO", "R", now)


class TestCopiedLines:
    def test_copied_block_is_the_received_lines_after_the_comments(self) -> None:
        """Answers and rules varied: the comment lines, the lines as received, a blank line."""
        for n in range(40):
            req = received(n)
            answer = f"REJECT <bob{n}@example.com> no"
            head = f"# time: {format_time(NOW)}\n# expect: {answer}\n# expect-rule: R{n % 3}\n"
            assert head.encode() + req.wire + b"\n\n" == block(req, answer, f"R{n % 3}", NOW)

    @pytest.mark.parametrize(
        "value", ["mail example", "#1", "a\tb", "caf\u00e9", "x =y", "\u00a0nbsp", "h\udcffst"]
    )
    def test_values_the_quick_check_refuses_are_written_as_received(self, value: str) -> None:
        """A value holding a blank, a '#' or non-ASCII bytes is written line by line:
        the same bytes as the received lines."""
        req = received(3, helo_name=value, ccert_subject=value)
        head = f"# time: {format_time(NOW)}\n# expect: OK\n# expect-rule: R\n".encode()
        assert head + req.wire + b"\n\n" == block(req, "OK", "R", NOW)

    def test_copied_and_formatted_blocks_replay_alike(self) -> None:
        """The same request, copied or written line by line: the same case."""
        req = received(7, helo_name="mail example")
        (copied,) = parse_policy_text(block(req, "OK", "R", NOW).decode())
        (formatted,) = parse_policy_text(block(PolicyRequest(req.raw), "OK", "R", NOW).decode())
        assert (formatted.request, formatted.expect) == (copied.request, copied.expect)

    def test_without_decisions_only_the_time_is_noted(self) -> None:
        """decisions = false: no '# expect:' lines, copied or formatted."""
        req = received(2)
        copied = block(req, "OK", "R", NOW, decisions=False)
        formatted = block(PolicyRequest(req.raw), "OK", "R", NOW, decisions=False)
        expected = f"# time: {format_time(NOW)}\n".encode() + req.wire + b"\n\n"
        assert (expected, expected) == (copied, formatted)

    def test_undecodable_answer_bytes_are_kept(self) -> None:
        """An answer quoting a surrogate-escaped byte is written as the byte it was."""
        req = received(helo_name="h\udcffst")
        data = block(req, "REJECT h\udcffst", "R", NOW)
        assert (True, True) == (b"# expect: REJECT h\xffst\n" in data, b"helo_name=h\xffst" in data)


class TestRecorderQueue:
    @on_reactor
    async def test_copied_and_formatted_records_keep_their_order(self, tmp_path: Path) -> None:
        """A batch mixing copied and line-by-line blocks is written in order."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        for n in range(30):
            req = received(n) if n % 3 else PolicyRequest(received(n).as_dict())
            made.add(req, "DUNNO", "R", NOW + n)
        await made.close()
        cases = read_policy_file(path)
        expected = [(n, NOW + n) for n in range(30)]
        assert expected == [(int(c.request["client_port"]), c.time) for c in cases]

    @on_reactor
    async def test_records_added_between_pushes_and_flushes_are_all_written(
        self, tmp_path: Path
    ) -> None:
        """Adds, pushes and flushes interleaved: every record lands once, in order."""
        path = tmp_path / "r.policy"
        made = recorder(path, max_pending_bytes=1 << 30)
        flushes = []
        for n in range(20_000):
            made.add(received(n), "DUNNO", "R", NOW)
            if n % 997 == 0:
                await turn(0.006 if n % 2 else 0.0)
            if n % 4001 == 0:
                flushes.append(made.flush())
        for flushed in flushes:
            await flushed
        await made.close()
        assert (list(range(20_000)), 0) == (ports(path), made.dropped)

    @on_reactor
    async def test_time_that_cannot_be_written_costs_a_counted_drop(self, tmp_path: Path) -> None:
        """A NaN clock does not raise into the answer path; the writer drops and logs it."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        with capture_logs() as logs:
            made.add(received(1), "DUNNO", "R", math.nan)
            await made.flush()
        made.add(received(2), "DUNNO", "R", NOW)
        await made.close()
        failed = [e["event"] for e in logs if e["event"] == "record_failed"]
        assert ([2], 1, ["record_failed"]) == (ports(path), made.dropped, failed)

    @on_reactor
    async def test_reload_turning_redaction_on_stops_copying(self, tmp_path: Path) -> None:
        """After reconfigure(redact = true), received lines are no longer copied as they came."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        made.add(received(1), "DUNNO", "R", NOW)
        await made.flush()
        made.reconfigure(settings(path, redact=True))
        made.add(received(2), "DUNNO", "R", NOW)
        await made.close()
        text = path.read_text()
        (_, redacted) = parse_policy_text(text)
        assert ("bob1@" in text, "bob2" in text) == (True, False)
        assert redacted.request["recipient"].startswith("h-")
