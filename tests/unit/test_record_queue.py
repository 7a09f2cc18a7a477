"""Whole pushes of records: every record in its place, whatever the batch holds.

`Recorder.add` takes a record, a tick queues what was taken; a push sends
the queue to the writer as one frame, orders (reloads, switches) in their
places, and the writer makes the blocks with the one formatter
(`Format.block`). Either way the file must hold exactly what
`Format.block` gives for each record, in order.
Records added with no await between them are one reactor turn, so one push.
"""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from structlog.testing import capture_logs

from postgate.record.blocks import Format, Redactor, key_path, load_key
from postgate.wire.codec import Decoder, PolicyRequest
from postgate.wire.policy_files import RECORDING_HEADER
from tests.unit.support.records import (
    NOW,
    moments,
    on_reactor,
    received,
    recorder,
    request,
    settings,
    started,
    turn,
)

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.record.recorder import Recorder

HEADER = RECORDING_HEADER.encode()
# Record: the request, the answer sent, the rule, the time.
Record = tuple[PolicyRequest, str, str, float]


def decoded(lines: bytes) -> PolicyRequest:
    """A request as the decoder hands over these received lines."""
    (request,) = Decoder().feed(b"request=smtpd_access_policy\n" + lines + b"\n\n")
    return request


def expected(
    records: list[Record], *, redactor: Redactor | None = None, decisions: bool = True
) -> bytes:
    """What the file must hold: `Format.block` of each record, in order."""
    shape = Format(decisions, redactor)
    blocks = [shape.block(req.wire or req.raw, ans, rule, now) for req, ans, rule, now in records]
    return HEADER + b"".join(blocks)


async def record_turn(path: Path, records: list[Record], **changes: object) -> Recorder:
    """Add ``records`` in one reactor turn, push them, close."""
    made = recorder(path, **changes)
    for req, answer, rule, now in records:
        made.add(req, answer, rule, now)
    await made.close()
    return made


class TestPlainTurns:
    @on_reactor
    async def test_a_turn_of_plain_requests_is_written_as_format_block_writes_it(
        self, tmp_path: Path
    ) -> None:
        """Every rounding edge of the time, in one push: byte for byte."""
        path = tmp_path / "r.policy"
        times = [now for now in moments() if 0.0 <= now < 4102444800.0][:400]
        records = [(received(n), "DUNNO", "R", now) for n, now in enumerate(times)]
        made = await record_turn(path, records)
        assert (expected(records), len(records), 0) == (
            path.read_bytes(),
            made.written,
            made.dropped,
        )

    @on_reactor
    async def test_answers_and_rules_of_each_record_are_its_own(self, tmp_path: Path) -> None:
        """Different answers in one push keep to their records; no decision lines when off."""
        path, path_off = tmp_path / "r.policy", tmp_path / "off.policy"
        records = [
            (received(n), f"REJECT no {n} \u00e9", f"RULE_{n % 3}", NOW + n) for n in range(30)
        ]
        await record_turn(path, records)
        await record_turn(path_off, records, decisions=False)
        assert (expected(records), expected(records, decisions=False)) == (
            path.read_bytes(),
            path_off.read_bytes(),
        )

    @on_reactor
    async def test_many_turns_queue_in_order(self, tmp_path: Path) -> None:
        """Pushes that reach the writer one after another keep their order."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        records = [(received(n), "DUNNO", "R", NOW + n) for n in range(500)]
        for index, (req, answer, rule, now) in enumerate(records):
            made.add(req, answer, rule, now)
            if index % 37 == 36:
                await turn(0.006)
        await made.close()
        assert expected(records) == path.read_bytes()


class TestMixedTurns:
    @on_reactor
    async def test_odd_requests_in_a_turn_are_written_as_format_block_writes_them(
        self, tmp_path: Path
    ) -> None:
        """Blanks, '#', CR, a NUL, a name that reads as a comment, a request not
        read from a peer: each written as `Format.block` writes it, in its place."""
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
        made = await record_turn(path, records)
        assert (expected(records), 0) == (path.read_bytes(), made.dropped)

    @on_reactor
    async def test_an_answer_with_a_lone_surrogate_is_written(self, tmp_path: Path) -> None:
        """An answer not in UTF-8 is written as `Format.block` writes it, escapes kept."""
        path = tmp_path / "r.policy"
        records = [
            (received(1), "DUNNO", "R", NOW),
            (received(2), "REJECT h\udcffst", "R", NOW + 1),
            (received(3), "DUNNO", "R", NOW + 2),
        ]
        made = await record_turn(path, records)
        assert (expected(records), 0) == (path.read_bytes(), made.dropped)

    @on_reactor
    async def test_times_format_time_cannot_write_cost_their_record_only(
        self, tmp_path: Path
    ) -> None:
        """NaN and infinity in a turn: those two are dropped and logged, the rest written."""
        path = tmp_path / "r.policy"
        good = [(received(n), "DUNNO", "R", NOW + n) for n in range(4)]
        made = recorder(path)
        with capture_logs() as logs:
            made.add(*good[0])
            made.add(received(90), "DUNNO", "R", math.nan)
            made.add(*good[1])
            made.add(received(91), "DUNNO", "R", math.inf)
            made.add(*good[2])
            made.add(*good[3])
            await made.close()
        failed = [e["event"] for e in logs if e["event"] == "record_failed"]
        assert (expected(good), 2, ["record_failed"]) == (
            path.read_bytes(),
            made.dropped,
            failed,
        )

    @on_reactor
    async def test_times_before_1970_are_written(self, tmp_path: Path) -> None:
        """A clock set before 1970 still gives a time line replay reads."""
        path = tmp_path / "r.policy"
        records = [(received(n), "DUNNO", "R", now) for n, now in enumerate([NOW, -1.5, NOW])]
        await record_turn(path, records)
        assert expected(records) == path.read_bytes()

    @on_reactor
    async def test_reload_inside_a_turn_applies_from_its_place_on(self, tmp_path: Path) -> None:
        """Records queued before a reload that turns redaction on are copied; after it,
        redacted; and the other way round."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        before = [(received(n), "DUNNO", "R", NOW + n) for n in range(3)]
        after = [(received(n), "DUNNO", "R", NOW + n) for n in range(3, 6)]
        again = [(received(n), "DUNNO", "R", NOW + n) for n in range(6, 9)]
        for record in before:
            made.add(*record)
        made.reconfigure(settings(path, redact=True))
        for record in after:
            made.add(*record)
        made.reconfigure(settings(path))
        for record in again:
            made.add(*record)
        await made.close()
        redactor = Redactor(load_key(key_path(path)))
        want = expected(before) + expected(after, redactor=redactor)[len(HEADER) :]
        want += expected(again)[len(HEADER) :]
        assert want == path.read_bytes()

    @on_reactor
    async def test_switching_off_inside_a_turn_writes_what_came_before(
        self, tmp_path: Path
    ) -> None:
        """Off, then on again, in one turn: the records before and after, none lost."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        first = [(received(n), "DUNNO", "R", NOW + n) for n in range(3)]
        second = [(received(n), "DUNNO", "R", NOW + n) for n in range(3, 6)]
        for record in first:
            made.add(*record)
        made.set_enabled(False)
        made.add(received(99), "DUNNO", "R", NOW)  # off: not recorded
        made.set_enabled(True)
        for record in second:
            made.add(*record)
        await made.close()
        assert (expected(first + second), 0) == (path.read_bytes(), made.dropped)


@on_reactor
async def test_the_writer_runs_in_the_idle_scheduling_class(tmp_path: Path) -> None:
    """The writer takes only CPU time nothing else wants: it never preempts the daemon."""
    made = recorder(tmp_path / "r.policy")
    made.add(received(1), "DUNNO", "R", NOW)
    pid = await started(made)
    for _ in range(300):  # bounded: the class is set once the interpreter has started
        policy = os.sched_getscheduler(pid)
        if policy == os.SCHED_IDLE:
            break
        await turn(0.01)
    await made.close()
    assert os.SCHED_IDLE == policy


class TestTick:
    @on_reactor
    async def test_records_past_the_backlog_bound_are_dropped_and_counted_in_order(
        self, tmp_path: Path
    ) -> None:
        """One tick's records beyond ``max_pending_bytes``: the first that fit are kept."""
        path = tmp_path / "r.policy"
        bound = 1 << 16
        made = recorder(path, max_pending_bytes=bound)
        records = [(received(n), "DUNNO", "R", NOW + n) for n in range(600)]
        for req, answer, rule, now in records:
            made.add(req, answer, rule, now)
        sizes = [len(req.wire) for req, _, _, _ in records]
        fitting = max(n for n in range(len(sizes) + 1) if sum(sizes[:n]) <= bound)
        assert fitting < len(records)  # the test must overflow the bound
        await made.close()
        assert (expected(records[:fitting]), fitting, len(records) - fitting) == (
            path.read_bytes(),
            made.written,
            made.dropped,
        )
