"""The batched `decision` writer renders the line the structlog chain would."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
import structlog

from postgate.config.load import LOG_LEVELS
from postgate.daemon import logs

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
