"""The batched `decision` writer renders the line the structlog chain would."""

from __future__ import annotations

import contextlib
import io
import os
import time
from typing import Any

import orjson
import pytest
import structlog

from postgate.config.load import LOG_LEVELS
from postgate.daemon import logs
from postgate.daemon.log_output import Sink, Throttle

NOT_DRY = False
RAW = {
    "protocol_state": "RCPT",
    "client_address": "192.0.2.7",
    "sender": 'a"b\r\n{"event":"forged"}@example.org',
    "recipient": "bad\udcffbyte@example.com",
    "helo_name": "not logged",
}


def lines(stream: io.BytesIO) -> list[dict[str, Any]]:
    """Each JSON line written, without its timestamp (which moves between the two)."""
    parsed = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    for event in parsed:
        event.pop("timestamp")
    return parsed


class TestDecisionLog:
    def test_same_line_as_the_structlog_chain(self) -> None:
        """Keys, order and values match what `log.info("decision", ...)` renders."""
        fast, chain = io.BytesIO(), io.BytesIO()
        logs.configure("info", "json", stream=chain, environ={}, cache=False)
        structlog.get_logger("postgate").info(
            "decision",
            rule="R",
            action="REJECT",
            dry_run=False,
            us=7,
            **{name: RAW[name] for name in logs.DECISION_FIELDS},
        )
        logs.configure("info", "json", stream=fast, environ={}, cache=False)
        writer = logs.decision_log(lambda flush: flush)
        assert writer is not None
        writer("R", "REJECT", NOT_DRY, 7, RAW)
        writer.flush()
        expected, actual = lines(chain), lines(fast)
        assert (expected, [list(e) for e in expected]) == (actual, [list(a) for a in actual])

    def test_request_values_cannot_start_a_line(self) -> None:
        """CR, LF and quotes in a sender stay inside one JSON string; one event, one line."""
        stream = io.BytesIO()
        logs.configure("info", "json", stream=stream, environ={}, cache=False)
        writer = logs.decision_log(lambda flush: flush)
        assert writer is not None
        writer("R", "DUNNO", NOT_DRY, 1, RAW)
        writer.flush()
        assert [("decision", RAW["sender"])] == [(e["event"], e["sender"]) for e in lines(stream)]

    def test_many_requests_make_one_write(self) -> None:
        """Lines queued in one reactor turn leave in a single write, in order."""
        stream = io.BytesIO()
        logs.configure("info", "json", stream=stream, environ={}, cache=False)
        scheduled: list[Any] = []
        writer = logs.decision_log(scheduled.append)
        assert writer is not None
        for number in range(3):
            writer(f"R{number}", "DUNNO", NOT_DRY, number, RAW)
        before = stream.getvalue()
        scheduled[0]()
        assert (b"", 1, ["R0", "R1", "R2"]) == (
            before,
            len(scheduled),
            [e["rule"] for e in lines(stream)],
        )


class TestLevels:
    @pytest.mark.parametrize("level", LOG_LEVELS)
    def test_every_level_the_config_accepts_configures_logging(self, level: str) -> None:
        """daemon.log_level's choices are the only list of levels; each one works here."""
        stream = io.BytesIO()
        logs.configure(level, "json", stream=stream, environ={}, cache=False)
        structlog.get_logger("postgate").critical("shown_at_every_level")
        assert ["shown_at_every_level"] == [e["event"] for e in lines(stream)]


BREAKS = "a\u2028b\u2029c\u0085d@example.org"


class TestLineBreaks:
    def test_unicode_line_breaks_are_escaped_in_every_json_line(self) -> None:
        """U+2028, U+2029 and U+0085 split lines for Unicode-aware readers: never raw."""
        stream = io.BytesIO()
        logs.configure("info", "json", stream=stream, environ={}, cache=False)
        structlog.get_logger("postgate").warning("protocol_error", peer=BREAKS)
        writer = logs.decision_log(lambda flush: flush)
        assert writer is not None
        writer("R", "DUNNO", NOT_DRY, 1, {**RAW, "sender": BREAKS, "recipient": "r@x"})
        writer.flush()
        raw = stream.getvalue()
        assert (2, [BREAKS, BREAKS]) == (
            len(raw.decode().splitlines()),
            [e.get("peer", e.get("sender")) for e in lines(stream)],
        )


class TestThrottle:
    def test_repeats_within_the_interval_are_counted_then_reported_once(self) -> None:
        now = [0.0]
        throttle = Throttle(frozenset({"connection_refused"}), 10.0, lambda: now[0])
        passed = []
        for second in (0, 1, 2, 3, 11):
            now[0] = second
            for reason in ("a", "a", "b"):  # a peer may vary the reason: one key still
                event = {"event": "connection_refused", "reason": reason}
                with contextlib.suppress(structlog.DropEvent):
                    passed.append(throttle(None, "warning", event)["reason"])
        with structlog.testing.capture_logs() as reported:
            throttle.report()
        assert ["a", "a"] == passed
        assert [("connection_refused", 13)] == [
            (e["suppressed_event"], e["count"]) for e in reported
        ]

    def test_other_events_always_pass(self) -> None:
        throttle = Throttle(frozenset({"connection_refused"}), 10.0, lambda: 0.0)
        events = [throttle(None, "info", {"event": "decision"}) for _ in range(3)]
        assert 3 == len(events)


class TestSink:
    def test_a_full_pipe_costs_dropped_lines_not_a_blocked_writer(self) -> None:
        read_end, write_end = os.pipe()
        scheduled: list[Any] = []
        with os.fdopen(write_end, "wb") as out, os.fdopen(read_end, "rb") as back:
            sink = Sink(out, lambda _delay, call: scheduled.append(call), limit=1 << 16)
            started = time.monotonic()
            for _ in range(4000):  # 400 KB: the pipe takes 64 KiB, the sink 64 KiB more
                sink.write(b"x" * 99 + b"\n")
            took = time.monotonic() - started
            got = bytearray()
            while scheduled:
                got += os.read(back.fileno(), 1 << 20)
                scheduled.pop(0)()
            got += os.read(back.fileno(), 1 << 20)
        lines = bytes(got).splitlines()
        notice = orjson.loads(lines[-1])
        kept = sum(line == b"x" * 99 for line in lines)
        assert (True, "log_lines_dropped") == (took < 0.5, notice["event"])
        assert (4000, True) == (kept + notice["lines"], kept < 4000)
