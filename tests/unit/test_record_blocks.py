"""Blocks built from received lines: the same bytes as `copy_block`, from caches."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from structlog.testing import capture_logs

from postgate.record.blocks import CopiedBlocks, copy_block, format_time
from postgate.record.recorder import Recorder
from postgate.wire.codec import PolicyRequest
from postgate.wire.policy_files import parse_policy_text, read_policy_file
from tests.unit.support.records import NOW, moments, ports, received, settings

if TYPE_CHECKING:
    from pathlib import Path


def time_line(block: bytes) -> str:
    return block.split(b"\n", 1)[0].decode()


def rounds_up(now: float) -> bool:
    """Whether format_time carries the microseconds of ``now`` into the next second."""
    return round((now - math.floor(now)) * 1_000_000) == 1_000_000


class TestTimeLine:
    def test_time_line_is_format_time_for_every_moment(self) -> None:
        """Cached seconds give format_time's text, rounding and times before 1970 included."""
        blocks, req = CopiedBlocks(), received()
        values = moments()
        built = [blocks.of(req.wire, "DUNNO", "R", now) for now in values]
        expected = [None if rounds_up(now) else f"# time: {format_time(now)}" for now in values]
        assert expected == [block and time_line(block) for block in built]
        assert 0 < expected.count(None) < 100

    def test_half_microseconds_round_to_even(self) -> None:
        """1/128 s is 7812.5 us and 3/128 s is 23437.5 us: both go to the even neighbour."""
        blocks, req = CopiedBlocks(), received()
        lines = [
            time_line(blocks.of(req.wire, "DUNNO", "R", 1772366400 + j / 128) or b"")
            for j in (1, 3)
        ]
        expected = [
            "# time: 2026-03-01T12:00:00.007812Z",
            "# time: 2026-03-01T12:00:00.023438Z",
        ]
        assert expected == lines

    def test_microseconds_rounding_up_to_the_next_second_are_left_to_copy_wire(self) -> None:
        """x.9999996 becomes second x+1: `of` leaves the block to `copy_wire`, via format_time."""
        now = 1772366399.9999996
        assert (None, "2026-03-01T12:00:00.000000Z") == (
            CopiedBlocks().of(received().wire, "DUNNO", "R", now),
            format_time(now),
        )

    def test_time_no_calendar_can_show_is_left_to_the_caller(self) -> None:
        """NaN, infinity and years beyond 9999 build no block, and raise nothing here."""
        blocks = CopiedBlocks()
        built = [
            blocks.of(received().wire, "DUNNO", "R", now) for now in (math.nan, math.inf, 1e20)
        ]
        assert [None, None, None] == built


class TestSameBytes:
    def test_block_is_copy_block_byte_for_byte(self) -> None:
        """Answers and rules varied, repeated and alternating: always copy_block's bytes."""
        blocks = CopiedBlocks()
        cases = [
            (received(n), answer, rule, NOW + n * 0.37)
            for n in range(40)
            for answer, rule in [("DUNNO", "LOCAL"), (f"REJECT <bob{n}@example.com> no", "R")]
        ]
        built = [blocks.of(req.wire, answer, rule, now) for req, answer, rule, now in cases]
        assert [copy_block(*case) for case in cases] == built

    def test_without_decisions_only_the_time_is_noted(self) -> None:
        """decisions = false: no '# expect:' lines, the same bytes as copy_block."""
        req = received(2)
        built = CopiedBlocks(decisions=False).of(req.wire, "OK", "R", NOW)
        assert copy_block(req, "OK", "R", NOW, decisions=False) == built

    def test_comment_lines_stay_right_past_the_cache_bound(self) -> None:
        """Thousands of rule names (many reloads): the cache is emptied, blocks stay right."""
        blocks, req = CopiedBlocks(), received()
        rules = [f"RULE_{n}" for n in range(5000)]
        wrong = [r for r in rules if blocks.of(req.wire, r, r, NOW) != copy_block(req, r, r, NOW)]
        assert [] == wrong

    def test_undecodable_answer_bytes_are_kept(self) -> None:
        """An answer quoting a surrogate-escaped byte is written as the byte it was."""
        req = received(helo_name="h\udcffst")
        built = CopiedBlocks().of(req.wire, "REJECT h\udcffst", "R", NOW)
        assert copy_block(req, "REJECT h\udcffst", "R", NOW) == built


class TestRecorderQueue:
    def test_copied_and_formatted_records_keep_their_order(self, tmp_path: Path) -> None:
        """A batch mixing copied blocks and records for the writer is written in order."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path))
        for n in range(30):
            req = received(n) if n % 3 else PolicyRequest(received(n).as_dict())
            recorder.add(req, "DUNNO", "R", NOW + n)
        recorder.close()
        cases = read_policy_file(path)
        expected = [(n, NOW + n) for n in range(30)]
        assert expected == [(int(c.request["client_port"]), c.time) for c in cases]

    def test_records_added_while_the_writer_drains_are_all_written(self, tmp_path: Path) -> None:
        """No lock on add: with flushes racing the adds, every record lands once, in order."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, max_pending=1_000_000))
        done = threading.Event()

        def flusher() -> None:
            while not done.is_set():
                recorder.flush(10)

        thread = threading.Thread(target=flusher, daemon=True)
        thread.start()
        try:
            for n in range(20_000):
                recorder.add(received(n), "DUNNO", "R", NOW)
        finally:  # a failure above must not leave the flusher spinning
            done.set()
            thread.join(30)
        recorder.close()
        assert (list(range(20_000)), 0) == (ports(path), recorder.dropped)

    def test_time_that_cannot_be_written_costs_a_counted_drop(self, tmp_path: Path) -> None:
        """A NaN clock does not raise into the answer path; the writer drops and logs it."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path))
        with capture_logs() as logs:
            recorder.add(received(1), "DUNNO", "R", math.nan)
            recorder.flush(10)
        recorder.add(received(2), "DUNNO", "R", NOW)
        recorder.close()
        failed = [e["event"] for e in logs if e["event"] == "record_failed"]
        assert ([2], 1, ["record_failed"]) == (ports(path), recorder.dropped, failed)

    def test_reload_turning_redaction_on_stops_copying(self, tmp_path: Path) -> None:
        """After reconfigure(redact = true), received lines are no longer copied as they came."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path))
        recorder.add(received(1), "DUNNO", "R", NOW)
        recorder.flush(10)
        recorder.reconfigure(settings(path, redact=True))
        recorder.add(received(2), "DUNNO", "R", NOW)
        recorder.close()
        text = path.read_text()
        (_, redacted) = parse_policy_text(text)
        assert ("bob1@" in text, "bob2" in text) == (True, False)
        assert redacted.request["recipient"].startswith("h-")
