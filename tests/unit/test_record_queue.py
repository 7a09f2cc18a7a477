"""Whole pushes of records: one loop for the usual queue, one at a time for the rest.

`Recorder.add` queues a record; every push turns the queue into blocks,
requests as Postfix sends them in one loop (`CopiedBlocks.extend`), the
others one by one (commands, reloads, redaction, odd requests). Either way
the file must hold exactly what `encode_block` gives for each record, in
order.
"""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from structlog.testing import capture_logs

from postgate.record.blocks import Redactor, encode_block, key_path, load_key
from postgate.record.recorder import Recorder
from postgate.wire.codec import Decoder, PolicyRequest
from postgate.wire.policy_files import RECORDING_HEADER
from tests.unit.support.records import NOW, moments, received, request, settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

HEADER = RECORDING_HEADER.encode()
# Record: the request, the answer sent, the rule, the time.
Record = tuple[PolicyRequest, str, str, float]


class Turns:
    """A reactor stand-in: pushes wait until the test ends the turn."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def call_later(self, delay: float, call: Callable[[], None]) -> object:
        self.due.append(call)
        return None

    def end(self) -> None:
        due, self.due = self.due, []
        for call in due:
            call()


def decoded(lines: bytes) -> PolicyRequest:
    """A request as the decoder hands over these received lines."""
    (request,) = Decoder().feed(b"request=smtpd_access_policy\n" + lines + b"\n\n")
    return request


def recorder_with_turns(path: Path, **changes: object) -> tuple[Recorder, Turns]:
    turns = Turns()
    return Recorder(settings(path, **changes), call_later=turns.call_later), turns


def expected(records: list[Record], *, redactor: Redactor | None = None) -> bytes:
    """What the file must hold: `encode_block` of each record, in order."""
    blocks = [
        encode_block(req, answer, rule, now, redactor=redactor)
        for req, answer, rule, now in records
    ]
    return HEADER + b"".join(blocks)


def record_turn(path: Path, records: list[Record]) -> Recorder:
    """Add ``records`` in one reactor turn, push them, close."""
    recorder, turns = recorder_with_turns(path)
    for req, answer, rule, now in records:
        recorder.add(req, answer, rule, now)
    turns.end()
    recorder.close()
    return recorder


class TestPlainTurns:
    def test_a_turn_of_plain_requests_is_written_as_encode_block_writes_it(
        self, tmp_path: Path
    ) -> None:
        """Every rounding edge of the time, made in one loop: byte for byte."""
        path = tmp_path / "r.policy"
        times = [now for now in moments() if 0.0 <= now < 4102444800.0][:400]
        records = [(received(n), "DUNNO", "R", now) for n, now in enumerate(times)]
        recorder = record_turn(path, records)
        assert (expected(records), len(records), 0) == (
            path.read_bytes(),
            recorder.written,
            recorder.dropped,
        )

    def test_answers_and_rules_of_each_record_are_its_own(self, tmp_path: Path) -> None:
        """Different answers in one push keep to their records; no decision lines when off."""
        path = tmp_path / "r.policy"
        records = [
            (received(n), f"REJECT no {n} \u00e9", f"RULE_{n % 3}", NOW + n) for n in range(30)
        ]
        record_turn(path, records)
        on = path.read_bytes()
        path_off = tmp_path / "off.policy"
        recorder, turns = recorder_with_turns(path_off, decisions=False)
        for req, answer, rule, now in records:
            recorder.add(req, answer, rule, now)
        turns.end()
        recorder.close()
        without = [encode_block(r, a, ru, t, decisions=False) for r, a, ru, t in records]
        assert (expected(records), HEADER + b"".join(without)) == (on, path_off.read_bytes())

    def test_many_turns_queue_in_order(self, tmp_path: Path) -> None:
        """Pushes that reach the writer one after another keep their order."""
        path = tmp_path / "r.policy"
        recorder, turns = recorder_with_turns(path)
        records = [(received(n), "DUNNO", "R", NOW + n) for n in range(500)]
        for index, (req, answer, rule, now) in enumerate(records):
            recorder.add(req, answer, rule, now)
            if index % 37 == 36:
                turns.end()
        turns.end()
        recorder.close()
        assert expected(records) == path.read_bytes()


class TestMixedTurns:
    def test_odd_requests_in_a_turn_are_written_as_encode_block_writes_them(
        self, tmp_path: Path
    ) -> None:
        """Blanks, '#', CR, a NUL, a name that reads as a comment, a request not
        read from a peer: each written as before, in its place in the turn."""
        path = tmp_path / "r.policy"
        odd = [
            received(1, ccert_subject="CN=mail example"),  # blank in a value: still copied
            received(2, helo_name="#not-a-comment"),
            received(3, **{"#name": "x"}),  # a name read back as a comment: left out
            decoded(b"client_port=31\n spaced=1"),  # a name with blanks: left out
            decoded(b"client_port=32\nname =1"),
            decoded(b"client_port=4\nhelo_name=cr\r\r\nsender=a@b"),  # a CR the reader keeps
            decoded(b"client_port=5\nhelo_name=nul\0"),
            request(6),  # not from a peer: no received lines
            received(7, helo_name="tab\there"),
        ]
        records: list[Record] = []
        for n, req in enumerate(odd):
            records.append((received(100 + n), "DUNNO", "R", NOW + n))
            records.append((req, "DUNNO", "R", NOW + n + 0.5))
        recorder = record_turn(path, records)
        assert (expected(records), 0) == (path.read_bytes(), recorder.dropped)

    def test_an_answer_with_a_lone_surrogate_is_written(self, tmp_path: Path) -> None:
        """An answer not in UTF-8 is written as `encode_block` writes it, escapes kept."""
        path = tmp_path / "r.policy"
        records = [
            (received(1), "DUNNO", "R", NOW),
            (received(2), "REJECT h\udcffst", "R", NOW + 1),
            (received(3), "DUNNO", "R", NOW + 2),
        ]
        recorder = record_turn(path, records)
        assert (expected(records), 0) == (path.read_bytes(), recorder.dropped)

    def test_times_format_time_cannot_write_cost_their_record_only(self, tmp_path: Path) -> None:
        """NaN and infinity in a turn: those two are dropped and logged, the rest written."""
        path = tmp_path / "r.policy"
        good = [(received(n), "DUNNO", "R", NOW + n) for n in range(4)]
        recorder, turns = recorder_with_turns(path)
        with capture_logs() as logs:
            recorder.add(*good[0])
            recorder.add(received(90), "DUNNO", "R", math.nan)
            recorder.add(*good[1])
            recorder.add(received(91), "DUNNO", "R", math.inf)
            recorder.add(*good[2])
            recorder.add(*good[3])
            turns.end()
            recorder.close()
        failed = [e["event"] for e in logs if e["event"] == "record_failed"]
        assert (expected(good), 2, ["record_failed"]) == (
            path.read_bytes(),
            recorder.dropped,
            failed,
        )

    def test_times_before_1970_are_written_from_the_daemon(self, tmp_path: Path) -> None:
        """The loop takes times from 1970 on; earlier ones are made one at a time."""
        path = tmp_path / "r.policy"
        records = [(received(n), "DUNNO", "R", now) for n, now in enumerate([NOW, -1.5, NOW])]
        record_turn(path, records)
        assert expected(records) == path.read_bytes()

    def test_reload_inside_a_turn_applies_from_its_place_on(self, tmp_path: Path) -> None:
        """Records queued before a reload that turns redaction on are copied; after it,
        redacted; and the other way round."""
        path = tmp_path / "r.policy"
        recorder, turns = recorder_with_turns(path)
        before = [(received(n), "DUNNO", "R", NOW + n) for n in range(3)]
        after = [(received(n), "DUNNO", "R", NOW + n) for n in range(3, 6)]
        again = [(received(n), "DUNNO", "R", NOW + n) for n in range(6, 9)]
        for record in before:
            recorder.add(*record)
        recorder.reconfigure(settings(path, redact=True))
        for record in after:
            recorder.add(*record)
        recorder.reconfigure(settings(path))
        for record in again:
            recorder.add(*record)
        turns.end()
        recorder.close()
        redactor = Redactor(load_key(key_path(path)))
        want = expected(before) + expected(after, redactor=redactor)[len(HEADER) :]
        want += expected(again)[len(HEADER) :]
        assert want == path.read_bytes()

    def test_switching_off_inside_a_turn_writes_what_came_before(self, tmp_path: Path) -> None:
        """Off, then on again, in one turn: the records before and after, none lost."""
        path = tmp_path / "r.policy"
        recorder, turns = recorder_with_turns(path)
        first = [(received(n), "DUNNO", "R", NOW + n) for n in range(3)]
        second = [(received(n), "DUNNO", "R", NOW + n) for n in range(3, 6)]
        for record in first:
            recorder.add(*record)
        recorder.set_enabled(False)
        recorder.add(received(99), "DUNNO", "R", NOW)  # off: not recorded
        recorder.set_enabled(True)
        for record in second:
            recorder.add(*record)
        turns.end()
        recorder.close()
        assert (expected(first + second), 0) == (path.read_bytes(), recorder.dropped)


def test_the_writer_runs_in_the_idle_scheduling_class(tmp_path: Path) -> None:
    """The writer takes only CPU time nothing else wants: it never preempts the daemon."""
    recorder = Recorder(settings(tmp_path / "r.policy"))
    recorder.add(received(1), "DUNNO", "R", NOW)
    assert recorder.flush(10)
    pid = recorder.writer_pid
    assert pid is not None
    policy = os.sched_getscheduler(pid)
    recorder.close()
    assert os.SCHED_IDLE == policy
