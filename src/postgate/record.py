"""Record the requests the daemon answers as a replayable request file.

The answer path turns each request into its block (`Recorder.add`: a few C
calls for what Postfix sends) and appends it to this reactor turn's list.
Once per turn the list goes down a non-blocking pipe to a writer process
(`postgate.record_writer`), which appends, rotates and fsyncs. When the
pipe is full (a slow disk) records wait here, up to ``max_pending``, then
are dropped and counted: an answer never waits for the disk. The settings
live in `postgate.record_settings`, the block format and redaction in
`postgate.record_format`; their public names are re-exported here. Imports
nothing from the rule engine or the config loader (config.py imports this
package's settings), and no Twisted: the daemon hands in ``call_later``.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from postgate.record_format import (
    CopiedBlocks,
    Redactor,
    encode_block,
    format_block,
    format_time,
    key_path,
    load_key,
)
from postgate.record_pipe import COMMAND_START, WriterProcess, command, open_command, time_left
from postgate.record_settings import RecordSettings, parse_record_settings
from postgate.record_writer import BLOCK_END, trim_cut_tail

if TYPE_CHECKING:
    from collections.abc import Callable

    from postgate.protocol import PolicyRequest
    from postgate.replies import Action

log = structlog.get_logger("postgate")

RETRY_INTERVAL: Final = 0.01  # the pipe was full: try again this much later
RESTART_INTERVAL: Final = 1.0  # at most one writer started per second
STATUS_INTERVAL: Final = 0.1  # how often the answer path looks for news from the writer
LOG_PERIOD: Final = 60.0
# Events the writer reports, and the level the daemon logs them at.
_WRITER_EVENTS: Final = {
    "record_repaired": "warning",
    "record_unrepairable": "error",
    "record_write_failed": "error",
}


class Recorder:
    """Takes records on the answer path; a writer process of its own writes them.

    `add` and the pushes it schedules run on the thread that answers;
    `flush` and `close` may run on another (the daemon closes from a worker
    thread, since closing waits for the disk). `add` takes no lock: it only
    appends to a list, and a push takes the first ``n`` items and deletes
    them, each one C call, so records appended meanwhile stay for the next.
    ``_push_lock`` keeps one pusher at a time, so the stream stays in order.
    """

    def __init__(
        self,
        settings: RecordSettings,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self._settings = settings
        self.enabled = settings.enabled and settings.path is not None
        self._call_later = call_later
        self._blocks = _blocks(settings)
        self._redactor: Redactor | None = None
        self._max_pending = settings.max_pending
        self._out: list[bytes] = []  # this turn's records and commands, in order
        self._backlog: list[bytes] = []  # earlier turns', behind what is stuck
        self._waiting = 0  # records in the backlog and stuck: they count to max_pending
        self._stuck = b""  # stream bytes the pipe has not taken yet, from _sent on
        self._sent = 0
        self._stuck_records = 0
        self._retrying = False
        self._push_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._writer: WriterProcess | None = None
        self._restart_at = 0.0
        self._status_at = 0.0
        self._closing = False
        self._asked = 0  # the last ack asked for
        self._full = 0  # refused by add: written on the answering thread only
        self._failed = 0  # could not be made into a block (answering thread)
        self._lost = 0  # in the pipe when a writer died (pushing thread)
        self._before = (0, 0)  # written and lost by writers that have ended
        self._drops = _Report(clock, "record_dropped", "dropped")
        self._failures = _Report(clock, "record_failed", "records")

    @property
    def written(self) -> int:
        """Records the writers have reported written (up to date after `flush`)."""
        writer = self._writer
        return self._before[0] + (writer.written if writer is not None else 0)

    @property
    def dropped(self) -> int:
        """Records never written: refused, unencodable, or lost with a writer or a disk."""
        writer = self._writer
        lost = self._before[1] + (writer.lost if writer is not None else 0)
        return self._full + self._failed + self._lost + lost

    @property
    def writer_pid(self) -> int | None:
        """The writer process, if one runs: started at the first record, not before."""
        writer = self._writer
        return writer.process.pid if writer is not None else None

    def add(
        self,
        request: PolicyRequest,
        action_line: str,
        rule: str,
        now: float,
        *,
        action: Action | None = None,
    ) -> None:
        """Queue one record; never waits for the disk (drops and counts instead).

        ``action_line`` is the answer sent; ``action`` the action that rendered
        it, needed to render the expectation again when redacting.
        """
        if not self.enabled:
            return
        out = self._out
        if len(out) + self._waiting >= self._max_pending:
            self._full += 1
            return
        blocks = self._blocks
        block = None if blocks is None else blocks.block(request, action_line, rule, now)
        if block is None:
            block = self._format(request, action_line, rule, now, action)
            if block is None:
                return
        out.append(block)
        if len(out) == 1:
            self._schedule(0.0)

    def _format(
        self, request: PolicyRequest, answer: str, rule: str, now: float, action: Action | None
    ) -> bytes | None:
        """The block of a request `CopiedBlocks` leaves out: redacted, or unusual."""
        settings = self._settings
        try:
            block = encode_block(
                request,
                answer,
                rule,
                now,
                decisions=settings.decisions,
                redactor=self._redaction(),
                action=action,
            )
            if COMMAND_START in block:  # `_lines` leaves NUL out: this cannot happen
                msg = "a block holding a NUL would read as a command"
                raise ValueError(msg)  # noqa: TRY301 - counted and logged below, like the rest
        except Exception as exc:  # noqa: BLE001 - a bad record must not reach the answer path
            self._failed += 1
            self._failures.report(self._failed, error=repr(exc))
            return None
        return block

    def _redaction(self) -> Redactor | None:
        settings = self._settings
        if not settings.redact or settings.path is None:
            return None
        if self._redactor is None:  # once per configuration: a small file beside the recording
            settings.path.parent.mkdir(parents=True, exist_ok=True)
            self._redactor = Redactor(load_key(key_path(settings.path)))
        return self._redactor

    def set_enabled(self, enabled: bool) -> bool:
        """Switch recording; returns the new state (off when no path is configured)."""
        on = enabled and self._settings.path is not None and not self._closing
        if self.enabled and not on:
            self._command(command(close=True))  # the file is whole and on disk once off
        self.enabled = on
        log.info("recording", enabled=self.enabled, path=str(self._settings.path))
        return self.enabled

    def reconfigure(self, settings: RecordSettings) -> None:
        """Use new settings for records added from now on (a reload)."""
        self._settings = settings
        self._blocks = _blocks(settings)
        self._redactor = None
        self._max_pending = settings.max_pending
        self.enabled = settings.enabled and settings.path is not None and not self._closing
        if self._writer is not None:
            self._command(open_command(settings) if self.enabled else command(close=True))

    def _command(self, order: bytes) -> None:
        """Queue a command for the writer, in stream order with the records."""
        if self._writer is None and not self._out:  # no writer, nothing for one to do
            return
        self._out.append(order)
        if len(self._out) == 1:
            self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        call_later = self._call_later
        if call_later is None:  # no reactor (tests, scripts): push at once, or with the next
            if delay == 0.0:
                self._push()
        elif delay == 0.0:
            call_later(0.0, self._push)
        elif not self._retrying:
            self._retrying = True
            call_later(delay, self._retry)

    def _retry(self) -> None:
        self._retrying = False
        self._push()

    def _push(self) -> None:
        """Hand this turn's records to the writer: one non-blocking write(2)."""
        if not self._push_lock.acquire(blocking=False):  # a flush is draining: later
            self._schedule(RETRY_INTERVAL)
            return
        try:
            if not self._closing and not self._send():
                self._schedule(RETRY_INTERVAL)
        finally:
            self._push_lock.release()
        now = time.monotonic()
        if now >= self._status_at:
            self._status_at = now + STATUS_INTERVAL
            self._news(wait=0.0)
            self._drops.report(self.dropped)

    def _send(self) -> bool:
        """Write what is queued into the pipe, as much as it takes; True when all went.

        Called with ``_push_lock`` held. This turn's records join the backlog
        (so `add` sees an empty list and schedules the next push); bytes the
        pipe did not take stay as they are (``_stuck``, from offset ``_sent``):
        a stalled disk costs no copying here.
        """
        out, backlog = self._out, self._backlog
        count = len(out)
        if count:
            backlog += out[:count]
            del out[:count]
        self._waiting = len(backlog) + self._stuck_records
        writer = self._writer
        if writer is None:
            if not backlog:
                return True
            writer = self._start()
            if writer is None:  # starting failed: the records wait, within max_pending
                return False
        if self._stuck and not self._write(writer, self._stuck, self._sent):
            return False
        if not backlog:
            return True
        data = b"".join(backlog)
        backlog.clear()
        return self._write(writer, data, 0)

    def _write(self, writer: WriterProcess, data: bytes, start: int) -> bool:
        try:
            sent = os.write(writer.pipe, memoryview(data)[start:] if start else data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # the writer is gone (EPIPE): what it did not take is lost
            self._writer_died(writer, exc, data.count(BLOCK_END, start))
            return False
        end = start + sent
        self._hold(data if end < len(data) else b"", end)
        return end == len(data)

    def _hold(self, data: bytes, start: int) -> None:
        """Keep ``data[start:]`` for the pipe, ahead of the backlog (nothing if empty)."""
        self._stuck, self._sent = data, start
        self._stuck_records = data.count(BLOCK_END, start) if data else 0
        self._waiting = len(self._backlog) + self._stuck_records

    def _start(self) -> WriterProcess | None:
        """A writer process for the current settings; None while starting is failing."""
        now = time.monotonic()
        settings = self._settings
        if settings.path is None or now < self._restart_at:
            return None
        self._restart_at = now + RESTART_INTERVAL
        try:
            writer: WriterProcess | str = WriterProcess.start()
        except OSError as exc:
            writer = str(exc)
        if isinstance(writer, str):
            log.error("record_writer_failed", error=writer)
            return None
        self._writer = writer
        # A new writer knows no file: what is queued goes to today's path.
        self._hold(open_command(settings), 0)
        return writer

    def _writer_died(self, writer: WriterProcess, exc: OSError, lost: int) -> None:
        self._lost += lost
        self._hold(b"", 0)
        self._retire(writer, writer.read(wait=0.0))
        log.error("record_writer_died", error=str(exc), lost=lost, returncode=writer.process.poll())

    def _retire(self, writer: WriterProcess, reports: list[dict[str, Any]]) -> None:
        """Log an ended writer's last reports, fold its totals into ours, let it go."""
        if self._writer is writer:
            self._writer = None
        self._handle(reports)
        self._before = (self._before[0] + writer.written, self._before[1] + writer.lost)
        writer.discard()

    def _news(self, wait: float) -> bool:
        """Log what the writer reported; False if another thread is reading it."""
        writer = self._writer
        if writer is None or not self._status_lock.acquire(blocking=wait > 0.0):
            return False
        try:
            self._handle(writer.read(wait))
        finally:
            self._status_lock.release()
        return True

    def _handle(self, reports: list[dict[str, Any]]) -> None:
        for report in reports:
            event = report.pop("event", None)
            if event in _WRITER_EVENTS:
                fields = {k: v for k, v in report.items() if k not in ("written", "lost")}
                getattr(log, _WRITER_EVENTS[event])(event, **fields)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is written; False on timeout.

        After `close` there is no writer to wait for: True.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._push_lock:
            if self._closing:
                return True
            if self._writer is None and not self._out and not self._backlog:
                return True  # nothing was ever queued, or it is all written
            self._asked += 1
            asked = self._asked
            self._out.append(command(ack=asked))
            if not self._drain(deadline):
                return False
        writer = self._writer
        while writer is not None and writer.acked < asked:
            left = time_left(deadline)
            if left == 0.0 or not writer.alive():
                return False
            self._news(wait=min(left, 1.0))
        return writer is not None

    def _drain(self, deadline: float | None) -> bool:
        """Send everything queued, waiting for room in the pipe until ``deadline``.

        Called with ``_push_lock`` held. A writer found dead is replaced
        once, without the restart interval: this is the last chance.
        """
        restarted = False
        while not self._send():
            writer = self._writer
            left = time_left(deadline)
            if left == 0.0 or (writer is None and restarted):
                return False
            if writer is None:
                restarted, self._restart_at = True, 0.0
                continue
            select.select([], [writer.pipe], [], min(left, 1.0))
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Send what is queued, let the writer write it and fsync, wait for it to end."""
        self.enabled = False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._push_lock:
            self._closing = True
            if not self._drain(deadline):  # what never reached a writer is lost: count it
                unsent = len(self._out) + len(self._backlog) + self._stuck_records
                self._lost += unsent
                log.error("record_close_timeout", unsent=unsent)
            writer, self._writer = self._writer, None
        if writer is not None:
            self._retire(writer, writer.finish(deadline))
        self._drops.report(self.dropped, force=True)


def _blocks(settings: RecordSettings) -> CopiedBlocks | None:
    """The answer path's block builder; none when redacting (`encode_block` redacts)."""
    return None if settings.redact else CopiedBlocks(decisions=settings.decisions)


@dataclass(slots=True)
class _Report:
    """Logs a growing count at most once per period, so a flood cannot flood the log."""

    clock: Callable[[], float]
    event: str
    field: str  # the name of the count of new records in the log line
    reported: int = 0
    last: float | None = None

    def report(self, total: int, *, force: bool = False, **fields: Any) -> None:
        if total <= self.reported:
            return
        now = self.clock()
        if force or self.last is None or now - self.last >= LOG_PERIOD:
            fields[self.field] = total - self.reported
            log.warning(self.event, total=total, **fields)
            self.reported, self.last = total, now


__all__ = [
    "RecordSettings",
    "Recorder",
    "Redactor",
    "format_block",
    "format_time",
    "key_path",
    "load_key",
    "parse_record_settings",
    "trim_cut_tail",
]
