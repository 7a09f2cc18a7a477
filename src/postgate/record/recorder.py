"""Record the requests the daemon answers as a replayable request file.

The answer path appends each request's received lines, its answer and the
time to a queue (`Recorder.add`), and nothing more: per-record work spread
over the answer path runs with cold caches (measured in the daemon: 4.5 µs
per request to build a block there). Every `PUSH_DELAY` the queue becomes
blocks in one warm loop (`CopiedBlocks.extend`) and goes, in one
non-blocking write, down a pipe to a writer process
(`postgate.record.writer`), which appends, rotates and fsyncs. Making the
blocks in the writer would spare the daemon that loop, but the writer's
CPU, even on the other core, cost the daemon about as much again
(measured). When the pipe is full (a slow disk, or a writer short of idle
CPU) records wait here, up to ``max_pending``, then are dropped and
counted: an answer never waits for the disk. The settings live in
`postgate.config.record`, the block format and redaction in
`postgate.record.blocks`; their public names are re-exported here. Imports
nothing from the rule engine or the config loader (config.py imports this
package's settings), and no Twisted: the daemon hands in ``call_later``.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from postgate.config.record import RecordSettings, parse_record_settings
from postgate.record.blocks import (
    CopiedBlocks,
    Redactor,
    encode_block,
    format_block,
    format_time,
    key_path,
    load_key,
)
from postgate.record.pipe import COMMAND_START, WriterProcess, command, open_command, time_left
from postgate.record.writer import BLOCK_END, trim_cut_tail

if TYPE_CHECKING:
    from collections.abc import Callable

    from postgate.replies.actions import Action
    from postgate.wire.codec import PolicyRequest

log = structlog.get_logger("postgate")

# A push costs the same for one record as for a hundred (a timer, a join,
# a write): records gather this long first, not one reactor turn, which at
# low concurrency is one request.
PUSH_DELAY: Final = 0.005
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
        self._encoder = _Encoder(settings)  # used under _push_lock only
        self._copying = not settings.redact  # `add` may queue the lines alone
        self._max_pending = settings.max_pending
        # The queue since the last push: _STRIDE items per record, added by
        # one C call (`add` says which); commands and a reload's new settings
        # take a record's place, with None for the answer.
        self._out: list[Any] = []
        self._room = _STRIDE * self._max_pending  # how long _out may grow
        self._backlog: list[bytes] = []  # earlier pushes' stream, behind what is stuck
        self._backlog_records = 0
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
        self._failed = 0  # could not be made into a block (pushing thread)
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
        action: Action | None = None,
    ) -> None:
        """Queue one record; never waits for the disk (drops and counts instead).

        ``action_line`` is the answer sent; ``action`` the action that rendered
        it, needed to render the expectation again when redacting. What
        Postfix sends is queued as its received lines alone, so the request
        is freed now, while it is in the cache, not at the push; the rest
        keeps the request for `_encode_each`.
        """
        if not self.enabled:
            return
        out = self._out
        if len(out) >= self._room:
            self._full += 1
            return
        wire = request.wire
        # NUL, CR, '#', space, tab: what `copyable` looks for. With none of
        # them no name can be wrong either, and the lines read back as sent.
        # `int in bytes` is one memchr, over bytes that were just decoded.
        if (
            wire
            and self._copying
            and not (0 in wire or 13 in wire or 35 in wire or 32 in wire or 9 in wire)
        ):
            out += (wire, action_line, rule, now, None)
        else:
            out += (None, action_line, rule, now, (request, action))
        if len(out) == _STRIDE:
            self._schedule(None)

    def _queue(self, special: bytes | _Encoder) -> None:
        """Put a command or new settings in the queue, in order with the records."""
        out = self._out
        out += (None, None, None, None, special)
        if len(out) == _STRIDE:
            self._schedule(None)

    def _encode(self, items: list[Any]) -> tuple[bytes, int]:
        """The queue's items as stream bytes, and how many records they hold.

        Called with ``_push_lock`` held. The usual queue, records alone of
        requests as Postfix sends them, becomes blocks in one loop with no
        call per record (`CopiedBlocks.extend`): warm, unlike the same work
        spread over the answer path.
        """
        wires = items[0::_STRIDE]
        copied = self._encoder.copied
        if all(wires) and copied is not None:
            times = items[3::_STRIDE]
            if _sane(times):
                parts: list[bytes] = []
                copied.extend(parts, wires, items[1::_STRIDE], items[2::_STRIDE], times)
                return b"".join(parts), len(wires)
        return self._encode_each(items)

    def _encode_each(self, items: list[Any]) -> tuple[bytes, int]:
        """`_encode` one item at a time: commands, reloads, redaction, odd requests.

        A record that cannot be made into a block is left out, counted and
        logged (`record_failed`).
        """
        parts: list[bytes] = []
        records = 0
        encoder = self._encoder
        for index in range(0, len(items), _STRIDE):
            wire, answer, rule, now, extra = items[index : index + _STRIDE]
            if answer is None:  # a command, or a reload's settings for the records after it
                if isinstance(extra, _Encoder):
                    encoder = self._encoder = extra
                else:
                    parts.append(extra)
                continue
            block = self._block(encoder, wire, extra, answer, rule, now)
            if block is not None:
                parts.append(block)
                records += 1
        return b"".join(parts), records

    def _block(
        self,
        encoder: _Encoder,
        wire: bytes | None,
        extra: tuple[PolicyRequest, Action | None] | None,
        answer: str,
        rule: str,
        now: float,
    ) -> bytes | None:
        """One record's block made here; None (counted, logged) when it cannot be.

        ``wire`` when the lines are copied as received, else ``extra``: the
        request and its action.
        """
        try:
            if wire is not None:
                return encoder.copy(wire, answer, rule, now)
            if extra is None:  # `_encode_each` gives one or the other
                msg = "a record with neither its lines nor its request"
                raise ValueError(msg)  # noqa: TRY301 - counted and logged below, like the rest
            request, action = extra
            return encoder.format(request, answer, rule, now, action)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the rest
            self._failed += 1
            self._failures.report(self._failed, error=repr(exc))
            return None

    def set_enabled(self, enabled: bool) -> bool:
        """Switch recording; returns the new state (off when no path is configured)."""
        on = enabled and self._settings.path is not None and not self._closing
        if self.enabled and not on:
            self._command(command(close=True))  # the file is whole and on disk once off
        self.enabled = on
        log.info("recording", enabled=self.enabled, path=str(self._settings.path))
        return self.enabled

    def reconfigure(self, settings: RecordSettings) -> None:
        """Use new settings for records added from now on (a reload).

        Records queued before the call are still encoded with the old ones:
        the new settings take their place in the queue.
        """
        self._settings = settings
        self._max_pending = settings.max_pending
        self._count_waiting()
        self.enabled = settings.enabled and settings.path is not None and not self._closing
        self._copying = not settings.redact
        self._queue(_Encoder(settings))
        if self._writer is not None:
            self._command(open_command(settings) if self.enabled else command(close=True))

    def _command(self, order: bytes) -> None:
        """Queue a command for the writer, in stream order with the records."""
        if self._writer is None and not self._out:  # no writer, nothing for one to do
            return
        self._queue(order)

    def _schedule(self, delay: float | None) -> None:
        """A push: ``None`` for the queue's first item, else a retry after ``delay``."""
        call_later = self._call_later
        if call_later is None:  # no reactor (tests, scripts): push at once, or with the next
            if delay is None:
                self._push()
        elif delay is None:
            call_later(PUSH_DELAY, self._push)
        elif not self._retrying:
            self._retrying = True
            call_later(delay, self._retry)

    def _retry(self) -> None:
        self._retrying = False
        self._push()

    def _push(self) -> None:
        """Hand the queue to the writer: one non-blocking write(2)."""
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

        Called with ``_push_lock`` held. The queue joins the backlog
        (so `add` sees an empty list and schedules the next push); bytes the
        pipe did not take stay as they are (``_stuck``, from offset ``_sent``):
        a stalled disk costs no copying here.
        """
        out, backlog = self._out, self._backlog
        count = len(out)
        if count:
            items = out[:count]
            del out[:count]
            data, records = self._encode(items)
            if data:
                backlog.append(data)
                self._backlog_records += records
        self._count_waiting()
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
        data = backlog[0] if len(backlog) == 1 else b"".join(backlog)
        backlog.clear()
        self._backlog_records = 0
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
        self._count_waiting()

    def _count_waiting(self) -> None:
        """Records in the backlog and stuck count to ``max_pending``: the rest is `add`'s room."""
        waiting = self._backlog_records + self._stuck_records
        self._room = _STRIDE * max(0, self._max_pending - waiting)

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
            self._queue(command(ack=asked))
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
                unsent = self._backlog_records + self._stuck_records
                self._lost += unsent
                log.error("record_close_timeout", unsent=unsent)
            writer, self._writer = self._writer, None
        if writer is not None:
            self._retire(writer, writer.finish(deadline))
        self._drops.report(self.dropped, force=True)


# What `add` queues per record (`Recorder._out`): the received lines (None
# when not copied), the answer sent, the rule, the time, and the request with
# its action (None when copied). A command or a reload's settings take the
# last place, with None in the other four.
_STRIDE: Final = 5
# The first second `format_time` cannot write (the year 10000).
_LAST_TIME: Final = 253402300800.0


def _sane(times: list[float]) -> bool:
    """Every time one `format_time` writes: no NaN, no infinity, within its years."""
    return math.isfinite(sum(times)) and min(times) >= 0.0 and max(times) < _LAST_TIME


class _Encoder:
    """Makes blocks under one configuration's settings (`Recorder._encode`)."""

    __slots__ = ("_redactor", "copied", "settings")

    def __init__(self, settings: RecordSettings) -> None:
        self.settings = settings
        # Redacting leaves nothing to copy as it came: every block is formatted.
        self.copied = None if settings.redact else CopiedBlocks(decisions=settings.decisions)
        self._redactor: Redactor | None = None

    def copy(self, wire: bytes, answer: str, rule: str, now: float) -> bytes:
        """The block of copyable lines, one record alone (`Recorder._encode_each`)."""
        copied = self.copied
        if copied is None:  # `add` queues no lines alone while redacting: never copy them
            msg = "received lines to copy under redaction"
            raise ValueError(msg)
        return copied.block(wire, answer, rule, now)

    def format(
        self, request: PolicyRequest, answer: str, rule: str, now: float, action: Action | None
    ) -> bytes:
        """The block of a request `CopiedBlocks` leaves out: redacted, or unusual."""
        settings = self.settings
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
            raise ValueError(msg)
        return block

    def _redaction(self) -> Redactor | None:
        settings = self.settings
        if not settings.redact or settings.path is None:
            return None
        if self._redactor is None:  # once per configuration: a small file beside the recording
            settings.path.parent.mkdir(parents=True, exist_ok=True)
            self._redactor = Redactor(load_key(key_path(settings.path)))
        return self._redactor


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
