"""The writer process's logic: whole blocks, commands in stream order, rotation, repair."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from postgate.record.blocks import Format
from postgate.record.writer import FAILURE_LOG_PERIOD, Writer, frame, trim_cut_tail
from postgate.wire.policy_files import RECORDING_HEADER, read_policy_file
from tests.unit.support.records import NOW, ports, received

if TYPE_CHECKING:
    from collections.abc import Iterator

HEADER = RECORDING_HEADER.encode()


def opening(path: Path, max_bytes: int = 0, keep: int = 0) -> bytes:
    """The first order the daemon sends (`postgate.record.recorder`): the file to write."""
    order = {"path": str(path), "max_bytes": max_bytes, "keep": keep, "decisions": True}
    return frame([{**order, "key": None}])


def record(n: int, **extra: str) -> tuple[bytes, str, str, float]:
    """A record as the daemon queues it: the received lines, answer, rule, time."""
    return (received(n, **extra).wire, "DUNNO", "R", NOW)


def sent(n: int, **extra: str) -> bytes:
    """One record as the daemon sends it: a frame of its own."""
    return frame([record(n, **extra)])


def sends(numbers: range | list[int]) -> bytes:
    """Records sent in one frame."""
    return frame([record(n) for n in numbers])


def block(n: int, **extra: str) -> bytes:
    """The block the file gets for record ``n``."""
    return Format().block(*record(n, **extra))


def blocks(numbers: range | list[int]) -> bytes:
    return b"".join(block(n) for n in numbers)


def rotated(path: Path, keep: int) -> list[Path]:
    """The files of a recording that exist, oldest first: path.KEEP ... path.1, path."""
    names = [path.with_name(f"{path.name}.{index}") for index in range(keep, 0, -1)]
    return [file for file in [*names, path] if file.exists()]


class StatusPipe:
    """Both ends of the status descriptor; the test reads what the writer reported."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)

    def reports(self) -> list[dict[str, Any]]:
        """Every status line sent since the last call, decoded."""
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_end, 65536):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    def events(self) -> list[dict[str, Any]]:
        return [report for report in self.reports() if "event" in report]

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def status() -> Iterator[StatusPipe]:
    pipe = StatusPipe()
    yield pipe
    pipe.close()


@pytest.fixture
def writer(status: StatusPipe) -> Iterator[Writer]:
    made = Writer(status.write_end)
    yield made
    made.close()


def feed(writer: Writer, *chunks: bytes) -> None:
    """Hand ``chunks`` to the writer one read at a time, as `Writer.run` does."""
    for chunk in chunks:
        writer.pending += chunk
        writer.consume()


class TestBlocks:
    def test_block_split_across_chunks_is_written_once_whole(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """Half a block waits in memory; the file gets it when its blank line arrives."""
        path = tmp_path / "r.policy"
        one, two, three = block(1), block(2), block(3)
        feed(writer, opening(path) + sent(1) + sent(2)[:50])
        first = path.read_bytes()
        feed(writer, sent(2)[50:] + sent(3)[:-1])
        second = path.read_bytes()
        feed(writer, sent(3)[-1:])
        assert (HEADER + one, HEADER + one + two, HEADER + one + two + three) == (
            first,
            second,
            path.read_bytes(),
        )

    def test_file_holds_only_whole_blocks_whatever_the_chunking(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """Fed one byte at a time, the file only ever holds the header and whole blocks."""
        path = tmp_path / "r.policy"
        stream = opening(path) + sent(0) + sent(1) + sent(2)
        seen = []
        for index in range(len(stream)):
            feed(writer, stream[index : index + 1])
            seen.append(path.read_bytes() if path.exists() else None)
        expected = [HEADER + blocks(range(n)) for n in (1, 2, 3)]
        assert expected == sorted({content for content in seen if content is not None})
        assert [0, 1, 2] == ports(path)

    def test_blocks_after_the_first_line_go_to_the_file_it_names(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """Nothing is written before the first line is whole; then the blocks follow it."""
        path = tmp_path / "r.policy"
        head = opening(path)
        feed(writer, head[:10])
        named = writer.target
        feed(writer, head[10:] + sent(1))
        assert (None, HEADER + block(1)) == (named, path.read_bytes())


class TestLines:
    def test_close_line_closes_the_file_and_the_next_block_reopens_it(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """Switched off: the file is closed; switched on, it appends, no new header."""
        path = tmp_path / "r.policy"
        feed(writer, opening(path) + sent(1) + frame([{"close": True}]))
        closed = writer.fd is None
        feed(writer, sent(2))
        assert (True, False, HEADER + blocks([1, 2])) == (
            closed,
            writer.fd is None,
            path.read_bytes(),
        )

    def test_blocks_go_to_the_path_named_before_them(self, tmp_path: Path, writer: Writer) -> None:
        """A reload's line in the middle of a read: blocks before it stay in the old file."""
        one, two = tmp_path / "one.policy", tmp_path / "two.policy"
        half = len(opening(two)) // 2
        feed(writer, opening(one) + sends([1, 2]) + opening(two)[:half])
        before = (ports(one), two.exists())
        feed(writer, opening(two)[half:] + sent(3) + opening(one) + sent(4))
        assert (([1, 2], False), [1, 2, 4], [3]) == (before, ports(one), ports(two))


class TestEndOfInput:
    def test_totals_are_reported_once_input_ends(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """Nothing is reported while all goes well; at the end, what was written and lost."""
        path = tmp_path / "r.policy"
        feed(writer, opening(path) + sends([1, 2]))
        quiet = status.reports()
        feed(writer, sent(3))
        writer.finish()
        assert ([], [{"written": 3, "lost": 0}]) == (quiet, status.reports())

    def test_file_is_closed_at_end_of_input_and_appended_to_by_the_next_writer(
        self, tmp_path: Path, status: StatusPipe
    ) -> None:
        """Switched off, then on: the next writer appends after the last block, no new header."""
        path = tmp_path / "r.policy"
        first, second = Writer(status.write_end), Writer(status.write_end)
        feed(first, opening(path) + sent(1))
        first.finish()
        feed(second, opening(path) + sent(2))
        second.finish()
        assert (None, HEADER + blocks([1, 2])) == (first.fd, path.read_bytes())

    def test_a_writer_without_a_file_loses_nothing_it_was_not_sent(
        self, writer: Writer, status: StatusPipe
    ) -> None:
        """Input that ends before the first line is whole: no file, nothing lost."""
        feed(writer, opening(Path("r.policy"))[:10])
        writer.finish()
        assert (None, [{"written": 0, "lost": 0}]) == (writer.fd, status.reports())


class TestRotation:
    def test_files_stay_within_max_bytes_and_hold_the_newest_records(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """path.2, path.1, path hold whole blocks, contiguous up to the newest; older are gone."""
        path = tmp_path / "r.policy"
        feed(writer, opening(path, max_bytes=1000, keep=2))
        for n in range(30):
            feed(writer, sent(n))
        files = rotated(path, keep=3)
        kept = [port for file in files for port in ports(file)]
        assert 3 == len(files)
        assert list(range(30 - len(kept), 30)) == kept
        assert [HEADER + blocks(ports(file)) for file in files] == [
            file.read_bytes() for file in files
        ]
        assert all(file.stat().st_size <= 1000 for file in files)

    def test_one_batch_is_divided_between_files_at_block_ends(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """A batch larger than a file rotates mid-batch, never inside a block."""
        path = tmp_path / "r.policy"
        feed(writer, opening(path, max_bytes=1000, keep=5) + sends(range(12)))
        writer.finish()
        files = rotated(path, keep=5)
        assert list(range(12)) == [port for file in files for port in ports(file)]
        assert [HEADER + blocks(ports(file)) for file in files] == [
            file.read_bytes() for file in files
        ]
        assert all(file.stat().st_size <= 1000 for file in files)
        assert [{"written": 12, "lost": 0}] == status.reports()

    def test_a_block_larger_than_max_bytes_alone_is_written_whole(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """A block that fits no file is not split or lost: it starts a file of its own."""
        path = tmp_path / "r.policy"
        big = block(2, helo_name="x" * 1500)
        feed(
            writer, opening(path, max_bytes=1000, keep=3) + sent(1) + sent(2, helo_name="x" * 1500)
        )
        assert [HEADER + block(1), HEADER + big] == [
            file.read_bytes() for file in rotated(path, keep=3)
        ]

    def test_blocks_after_a_larger_one_start_another_file(
        self, tmp_path: Path, writer: Writer
    ) -> None:
        """The oversized block is alone in its file: the blocks after it go to the next one."""
        path = tmp_path / "r.policy"
        big = sent(2, helo_name="x" * 1500)
        feed(writer, opening(path, max_bytes=1000, keep=5) + sent(1) + big + sends(range(3, 9)))
        files = rotated(path, keep=5)
        assert [2] == ports(files[1])
        assert all(file.stat().st_size <= 1000 for file in files if file != files[1])
        assert list(range(1, 9)) == [port for file in files for port in ports(file)]

    def test_keep_zero_deletes_instead_of_renaming(self, tmp_path: Path, writer: Writer) -> None:
        """keep = 0: a full file is removed and a fresh one begun, no numbered copies."""
        path = tmp_path / "r.policy"
        feed(writer, opening(path, max_bytes=1000, keep=0))
        for n in range(10):
            feed(writer, sent(n))
        kept = ports(path)
        assert ([path], list(range(10 - len(kept), 10))) == (list(tmp_path.iterdir()), kept)
        assert 0 < len(kept) < 10


class TestFinish:
    def test_partial_block_at_end_of_input_is_dropped(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """A block the daemon's death cut short is not written; the last status has the totals."""
        path = tmp_path / "r.policy"
        feed(writer, opening(path) + sends([1, 2]) + sent(3)[:-20])
        writer.finish()
        assert (HEADER + blocks([1, 2]), None) == (path.read_bytes(), writer.fd)
        assert path.read_bytes().endswith(b"\n\n")
        assert [{"written": 2, "lost": 0}] == status.reports()

    def test_run_writes_everything_up_to_end_of_input(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """`Writer.run` reads until the daemon closes the pipe, then finishes."""
        path = tmp_path / "r.policy"
        source, sink = os.pipe()
        try:
            os.write(sink, opening(path) + sends(range(3)) + sent(3)[:10])
            os.close(sink)
            writer.run(source)
        finally:
            os.close(source)
        assert ([0, 1, 2], [{"written": 3, "lost": 0}]) == (ports(path), status.reports())


class TestWriteFailures:
    def test_unwritable_target_loses_blocks_and_reports_once(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """Every failed batch counts as lost, one event per period, the totals at the end."""
        plain = tmp_path / "plain"
        plain.write_text("not a directory")
        bad = plain / "r.policy"
        feed(writer, opening(bad) + sends([1, 2]))
        feed(writer, sent(3))
        feed(writer, sent(4))
        writer.finish()
        reports = status.reports()
        failures = [r["path"] for r in reports if r.get("event") == "record_write_failed"]
        assert ([str(bad)], {"written": 0, "lost": 4}) == (failures, reports[-1])

    def test_failure_is_reported_again_after_the_period(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """Still failing a period later: logged again, the totals counting the failed batch."""
        plain = tmp_path / "plain"
        plain.write_text("not a directory")
        feed(writer, opening(plain / "r.policy") + sent(1))
        writer.failed_at["record_write_failed"] -= FAILURE_LOG_PERIOD
        feed(writer, sent(2))
        events = [(e["event"], e["lost"]) for e in status.events()]
        assert [("record_write_failed", 1), ("record_write_failed", 2)] == events


class TestTrimCutTail:
    def test_cut_tail_is_removed_and_its_size_returned(self, tmp_path: Path) -> None:
        """A recording ending inside a block is cut back to its last whole block."""
        path = tmp_path / "r.policy"
        path.write_bytes(HEADER + block(1) + block(2)[:-40])
        removed = trim_cut_tail(path)
        assert (len(block(2)) - 40, HEADER + block(1)) == (removed, path.read_bytes())

    def test_cut_first_block_leaves_the_header(self, tmp_path: Path) -> None:
        """With no whole block at all, everything after the header goes."""
        path = tmp_path / "r.policy"
        path.write_bytes(HEADER + block(1)[:30])
        assert (30, HEADER) == (trim_cut_tail(path), path.read_bytes())

    @pytest.mark.parametrize(
        "content",
        [
            HEADER + block(1) + block(2),
            HEADER,
            b"request=smtpd_access_policy\nrecipient=a@b",
            b"",
        ],
        ids=["whole", "header-only", "not-a-recording", "empty"],
    )
    def test_files_with_nothing_to_cut_are_untouched(self, tmp_path: Path, content: bytes) -> None:
        """Whole recordings and other files (a hand-written one may end anywhere) are kept."""
        path = tmp_path / "r.policy"
        path.write_bytes(content)
        assert (0, content) == (trim_cut_tail(path), path.read_bytes())

    def test_absent_file_has_nothing_to_cut(self, tmp_path: Path) -> None:
        """The first open of a new path is not a repair."""
        path = tmp_path / "r.policy"
        assert (0, False) == (trim_cut_tail(path), path.exists())

    def test_no_block_end_in_the_last_256_kib_is_left_alone(self, tmp_path: Path) -> None:
        """Too far back to find the last whole block: None, and the file is not touched."""
        path = tmp_path / "r.policy"
        content = HEADER + block(1) + b"padding=" + b"x" * (256 * 1024) + b"\n"
        path.write_bytes(content)
        assert (None, content) == (trim_cut_tail(path), path.read_bytes())

    def test_opening_a_cut_recording_repairs_it_and_reports(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """The daemon hears how much was cut; new blocks follow the last whole one."""
        path = tmp_path / "r.policy"
        path.write_bytes(HEADER + block(1) + block(2)[:-40])
        feed(writer, opening(path) + sent(3))
        expected = {
            "event": "record_repaired",
            "path": str(path),
            "removed_bytes": len(block(2)) - 40,
            "written": 0,
            "lost": 0,
        }
        assert ([expected], HEADER + blocks([1, 3])) == (status.events(), path.read_bytes())

    def test_opening_an_unrepairable_recording_reports_it(
        self, tmp_path: Path, writer: Writer, status: StatusPipe
    ) -> None:
        """A cut that cannot be found is reported, and the file is set aside, untouched."""
        path = tmp_path / "r.policy"
        cut = HEADER + block(1) + b"padding=" + b"x" * (256 * 1024)
        path.write_bytes(cut)
        feed(writer, opening(path) + sent(3))
        events = [(e["event"], e["path"]) for e in status.events()]
        assert ([("record_unrepairable", str(path))], cut, HEADER + block(3)) == (
            events,
            path.with_name("r.policy.cut").read_bytes(),
            path.read_bytes(),
        )


def read_reports(fd: int, until: str, deadline: float) -> list[dict[str, Any]]:
    """Status lines from ``fd`` until one has ``until`` or the pipe ends (bounded)."""
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        data += chunk
        reports = [json.loads(line) for line in data.splitlines(keepends=True) if b"\n" in line]
        if not chunk or any(until in report for report in reports):
            return reports
    return []


class TestProcess:
    def test_writer_process_reports_and_leaves_a_replayable_file(self, tmp_path: Path) -> None:
        """`python -m postgate.record.writer`: totals on stdout, exits 0 at end of input."""
        path = tmp_path / "r.policy"
        read_end, write_end = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "postgate.record.writer"],
            stdin=subprocess.PIPE,
            stdout=write_end,
        )
        os.close(write_end)
        try:
            assert process.stdin is not None
            process.stdin.write(opening(path) + sends(range(5)))
            process.stdin.close()
            deadline = time.monotonic() + 10
            returncode = process.wait(timeout=10)
            last = read_reports(read_end, "never", deadline)
        finally:
            os.close(read_end)
            if process.poll() is None:
                process.kill()
                process.wait()
        assert ([{"written": 5, "lost": 0}], 0) == (last, returncode)
        assert list(range(5)) == [int(c.request["client_port"]) for c in read_policy_file(path)]
