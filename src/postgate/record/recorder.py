"""Record the requests the daemon answers: the daemon's side, cheap on the answer path.

The answer path only appends a pair to `Recorder.live`: the received lines
as they came, and the `Answer` (its text, rule, time, action). Every
`PUSH_DELAY` while recording is on, a tick moves them to the queue, counting
their bytes against ``max_pending_bytes`` (dropping and counting past it),
and the queue goes down a pipe as one frame to a writer process
(`postgate.record.writer`), which makes the blocks, redacts, appends, rotates
and fsyncs. Counting per tick rather than per record saves the answer path a
call (docs/performance.md); the records of the current tick wait on top
of the bound, not yet counted. The recorder is the push producer of that
pipe: while it is full (a slow disk, a writer short of CPU) requests wait
here, and an answer never waits for the disk. Switching off and reloads are
orders among the records, in their place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import structlog
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IPushProducer, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from zope.interface import implementer

from postgate.record.blocks import KeyFileError, key_path, load_key
from postgate.record.writer import HELD_SIGNALS, frame

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.python.failure import Failure

    from postgate.config.record import RecordSettings
    from postgate.replies.model import Action
    from postgate.wire.codec import PolicyRequest

log = structlog.get_logger("postgate")

PUSH_DELAY: Final = 0.005  # 2 ms measured alike; 20 ms cost the daemon twice as much
PUSH_BYTES: Final = 256 * 1024  # a push sends at most this much: a backlog drains in short turns
PIPE_BYTES: Final = 1 << 20  # a writer's start and its batches: 40 ms at 40,000 requests/s
RESTART_DELAYS: Final = (1.0, 300.0)  # a writer that dies is restarted after 1 s, 2 s ... 5 min
LOG_PERIOD: Final = 60.0  # drops are logged at most this often
STDERR_KEPT: Final = 2000  # bytes of a writer's stderr kept for `record_writer_died`
_LEVELS: Final = {"record_repaired": "warning", "record_failed": "warning"}
CLOSE: Final = {"close": True}  # for the writer: fsync and close the file


@implementer(IPushProducer)
class Recorder(ProcessProtocol):
    """Takes records on the answer path and feeds them to a writer process of its own."""

    def __init__(
        self,
        settings: RecordSettings,
        reactor: IReactorProcess,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reactor, self._timers, self._clock = reactor, IReactorTime(reactor), clock
        self._queue: list[Any] = []  # record tuples, and orders (dicts) for the writer
        self._queued = 0  # request bytes in the queue, bounded by max_pending_bytes
        self._timer: Any = None
        self._paused = self._closing = self._taking = self._asked = False  # taking: not ending
        self._handed = self._confirmed = self._wrote = 0  # sent; written or lost; written
        self._out = self._err = b""
        self._exits: list[defer.Deferred[None]] = []
        self._failures, self._restart_at = 0, 0.0  # writers that died in a row; next start
        self._full = self._lost = self.written = 0
        self._logged = (0, -LOG_PERIOD)  # drops last logged, and when
        self._settings, self._order = settings, self._load(settings)
        # What the answer path took since the last tick, (received lines or
        # attributes, `Answer`) each; None while off.
        self.live: list[tuple[bytes | dict[str, str], tuple[Any, ...]]] | None = None
        self._ticker: Any = None
        self._tick_while(self._on(settings.enabled))

    @property
    def enabled(self) -> bool:
        """Recording is on: the answer path has a list to take records into."""
        return self.live is not None

    @property
    def dropped(self) -> int:
        """Records never written: refused, unformattable, or lost with a writer or a disk."""
        return self._full + self._lost

    @property
    def writer_pid(self) -> int | None:
        """The writer process, if one runs: started at the first record, not before."""
        return self.transport.pid if self.transport is not None else None

    def add(
        self,
        request: PolicyRequest,
        answer: str,
        rule: str,
        now: float,
        action: Action | None = None,
    ) -> None:
        """Take one record; never waits for the disk (the tick drops and counts instead).

        The daemon's answer path appends its `Answer` inline; this lays the
        fields out as an `Answer` holds them (rule, action, text, wire, now).
        """
        live = self.live
        if live is not None:  # not read from a peer: the request's attributes
            live.append((request.wire or request.raw, (rule, action, answer, b"", now)))

    def _tick_while(self, on: bool) -> None:
        """Take records while ``on``: a list to append to, and the tick that empties it."""
        if not on:
            self.live = None
            return
        if self.live is None:
            self.live = []
        if self._ticker is None:
            self._ticker = self._timers.callLater(PUSH_DELAY, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        self._take_live()
        if self.live is not None:
            self._ticker = self._timers.callLater(PUSH_DELAY, self._tick)

    def _take_live(self) -> None:
        """Queue what the answer path took, up to ``max_pending_bytes``; drop and count the rest."""
        live = self.live
        if not live:
            return
        self.live = []
        sizes = [len(s) if s.__class__ is bytes else _weight(s) for s, _ in live]
        room = self._settings.max_pending_bytes - self._queued
        total = sum(sizes)
        if total > room:  # the pipe is full: keep what fits, in order
            kept, total = [], 0
            for record, size in zip(live, sizes, strict=True):
                if total + size <= room:
                    total += size
                    kept.append(record)
            self._full += len(live) - len(kept)  # a push logs it, even while the pipe is full
            live = kept
        self._queued += total
        # An Answer's text, rule and time (2, 0, 4) and, to redact, its action (1),
        # which renders the redacted request's answer.
        if self._redacting:
            self._queue += [(s, a[2], a[0], a[4], _line(a[1])) for s, a in live]
        else:
            self._queue += [(s, a[2], a[0], a[4]) for s, a in live]
        self._schedule(0.0)

    def set_enabled(self, enabled: bool) -> bool:
        """Switch recording; returns the new state (off without a path or a usable key)."""
        on = self._on(enabled)
        if self.enabled and not on:
            self._command(CLOSE)  # the file is whole and on disk once off
        self._tick_while(on)
        log.info("recording", enabled=on, path=str(self._settings.path))
        return on

    def reconfigure(self, settings: RecordSettings) -> None:
        """Use new settings for records added from now on (a reload)."""
        self._take_live()  # taken before the reload: the old settings' file
        if self.transport is None and self._queue and self._order is not None:
            self._queue.insert(0, self._order)  # the next writer starts on the new file
        self._settings, self._order = settings, self._load(settings)
        on = self._on(settings.enabled)
        self._command(self._order if on and self._order else CLOSE)
        self._tick_while(on)

    def _command(self, order: dict[str, Any]) -> None:
        self._take_live()  # what was taken before the order goes before it
        if self.transport is not None or self._queue:  # else the next writer starts afresh
            self._queue.append(order)
            self._schedule(0.0)

    def _on(self, wanted: bool) -> bool:
        return wanted and self._order is not None and not self._closing

    def _load(self, settings: RecordSettings) -> dict[str, Any] | None:
        """The writer's order for ``settings``; None (logged) if recording must not start."""
        key, self._redacting = None, False
        if settings.path is not None and settings.redact:
            try:
                key = load_key(key_path(settings.path))
            except (OSError, KeyFileError) as exc:
                log.error("record_key_failed", path=str(settings.path), error=str(exc))  # noqa: TRY400
                return None
            self._redacting = True
        fields = ("max_bytes", "keep", "decisions")
        named = {"path": str(settings.path), "key": key} | {f: getattr(settings, f) for f in fields}
        return named if settings.path is not None else None

    def _push(self) -> None:
        """Hand up to `PUSH_BYTES` of the queue to the writer, unless its pipe is full."""
        self._timer = None
        self._log_drops()
        if not self._queue or self._paused or self._closing:
            return  # resumeProducing pushes again
        if (self._taking or self._start()) and self.transport is not None:
            self._write(self._take(PUSH_BYTES))
            if self._queue:
                self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        if self._timer is None:
            self._timer = self._timers.callLater(delay, self._push)

    def _take(self, limit: float) -> list[Any]:
        """The queue's first items, up to ``limit`` request bytes (one record at least)."""
        queue, taken, count = self._queue, 0, 0
        if self._queued <= limit:
            self._queue, self._queued = [], 0
            return queue
        while taken < limit:
            taken += 0 if isinstance(queue[count], dict) else _weight(queue[count][0])
            count += 1
        self._queued -= taken
        batch = queue[:count]
        del queue[:count]
        return batch

    def _write(self, batch: list[Any]) -> None:
        if batch and self.transport is not None:
            self.transport.write(frame(batch))
            self._handed += _records(batch)

    def _start(self) -> bool:
        """A writer for today's file, unless one is ending or restarts back off."""
        left = self._restart_at - self._clock()
        if self.transport is not None:  # one is ending: its exit pushes again
            return False
        if left > 0 and not self._closing:
            self._schedule(left)
            return False
        # Born with these blocked (a mask survives exec), the writer ignores
        # them before they can end it (`postgate.record.writer.main`).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            args = [sys.executable, "-m", "postgate.record.writer"]
            transport = self._reactor.spawnProcess(self, sys.executable, args, env=os.environ)
        except OSError as exc:
            self._died(str(exc))
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        stdin = transport.pipes[0]  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):  # not allowed above fs.pipe-max-size: keep 64 KiB
            fcntl.fcntl(stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        stdin.bufferSize = PUSH_BYTES  # paused only when the pipe is full, not at every push
        transport.registerProducer(self, streaming=True)  # type: ignore[attr-defined]
        transport.write(frame([self._order]))
        self._taking = True
        return True

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._queue:
            self._schedule(0.0)

    def stopProducing(self) -> None:
        self._paused = False

    def flush(self) -> defer.Deferred[None]:
        """Send what is queued and end the writer: fires once it is written and on disk.

        One writer at a time: the next record starts another once this one has exited.
        """
        self._take_live()
        if self.transport is not None and not self._taking:  # ending: flush after it
            return self._exited().addCallback(lambda _: self.flush())
        if not self._taking and not (self._queue and self._start()):
            if self._closing:  # no writer would start: the records are lost
                self._lost += _records(self._take(float("inf")))
            return defer.succeed(None)
        assert self.transport is not None
        self._write(self._take(float("inf")))
        # A producer left paused would keep the transport from ever closing.
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        self.transport.closeStdin()
        self._taking, self._paused, self._asked = False, False, True
        return self._exited()

    def _exited(self) -> defer.Deferred[None]:
        exited: defer.Deferred[None] = defer.Deferred()
        self._exits.append(exited)
        return exited

    def close(self, timeout: float = 10.0) -> defer.Deferred[None]:
        """Send what is queued, let the writer write it and fsync, wait for it to end."""
        self._take_live()
        self._closing = True
        self._tick_while(on=False)
        for timer in (self._timer, self._ticker):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._ticker = None
        timer = self._timers.callLater(timeout, self._kill, timeout)

        def closed(_: object) -> None:
            if timer.active():
                timer.cancel()
            self._log_drops(force=True)

        return self.flush().addBoth(closed)

    def _kill(self, timeout: float) -> None:
        """The writer did not finish within ``timeout`` (a dead disk): its records are lost."""
        self._lost += _records(self._take(float("inf")))
        if self.transport is not None:
            unsent = self._handed - self._confirmed
            log.error("record_close_timeout", seconds=timeout, unsent=unsent)
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess("KILL")

    def outReceived(self, data: bytes) -> None:
        """The writer's events, logged as the daemon's own, and its totals."""
        *lines, self._out = (self._out + data).split(b"\n")
        for line in lines:
            report = json.loads(line)
            self._wrote = report.pop("written")
            self._confirmed = self._wrote + report.pop("lost")
            self._failures = 0  # it runs: a later death starts the back-off again
            if "event" in report:
                getattr(log, _LEVELS.get(report["event"], "error"))(**report)

    def errReceived(self, data: bytes) -> None:
        # Never passed on: a traceback would land in the JSON log as raw lines.
        self._err = (self._err + data)[-STDERR_KEPT:]

    def processEnded(self, reason: Failure) -> None:
        """A writer exited: what it did not write is lost; restart later if it was not asked."""
        self._lost += self._handed - self._wrote
        self.written += self._wrote
        self._handed = self._confirmed = self._wrote = 0
        self.transport, self._taking, self._paused = None, False, False
        if not self._asked:
            self._died(reason.getErrorMessage())
        self._asked, self._out, self._err = False, b"", b""
        exits, self._exits = self._exits, []
        for exited in exits:
            exited.callback(None)
        if self._queue:
            self._schedule(max(0.0, self._restart_at - self._clock()))

    def _died(self, error: str) -> None:
        """One structured event per death (never its raw stderr), and a longer wait each time."""
        self._failures += 1
        delay = min(RESTART_DELAYS[0] * 2 ** (self._failures - 1), RESTART_DELAYS[1])
        self._restart_at = self._clock() + delay
        lines = self._err.decode("utf-8", "replace").strip().splitlines() or [""]
        log.error("record_writer_died", error=error, stderr=lines[-1], restart_in=delay)
        if self._queue:
            self._schedule(delay)

    def _log_drops(self, *, force: bool = False) -> None:
        """Log a growing count at most once a period, so a flood cannot flood the log."""
        (reported, at), now, total = self._logged, self._clock(), self.dropped
        if total > reported and (force or now - at >= LOG_PERIOD):
            log.warning("record_dropped", total=total, dropped=total - reported)
            self._logged = (total, now)


def _line(action: Action | None) -> str:
    return action.line if action is not None else ""


def _records(items: list[Any]) -> int:
    return sum(not isinstance(item, dict) for item in items)


def _weight(source: bytes | dict[str, str]) -> int:
    """The request's bytes on the wire; for one not read from a peer, about its lines."""
    if isinstance(source, bytes):
        return len(source)
    return sum(len(k) + len(v) + 2 for k, v in source.items())
