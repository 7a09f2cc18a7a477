"""Where the daemon's log lines go: never blocking, bounded, and never forged.

A log consumer can stall (journald under load, a paused ``| tee``). With a
blocking write on the reactor thread, one full pipe would stop every answer,
so the daemon writes through `Sink`, which never waits: past ``limit`` bytes
waiting, lines are dropped and counted, and the count is written
(``log_lines_dropped``) once the consumer takes lines again. A writer thread
would do the same, but waking it and handing it the interpreter lock cost
the answer path about 10 % (docs/performance.md).

`Throttle` keeps one client from flooding the log with the same event
(``connection_refused`` thousands of times a second): the first of each
(event, reason) in an interval is logged, the rest are counted and reported
once, as ``log_suppressed``, when the interval is over.

`line_safe` escapes the three characters that JSON allows raw but that
Unicode-aware line splitters treat as line ends (U+0085, U+2028, U+2029).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import time
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping
    from typing import BinaryIO

LIMIT: Final = 8 << 20
RETRY: Final = 0.05  # seconds between tries while the consumer takes nothing
MAX_KEYS: Final = 1000
_BREAKS: Final = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def line_safe(line: bytes) -> bytes:
    # All three are rare in practice: test before paying for replace().
    if not line.isascii() and (b"\xc2\x85" in line or b"\xe2\x80" in line):
        for raw, escaped in _BREAKS:
            line = line.replace(raw, escaped)
    return line


class Sink:
    """A file-like writer whose ``write`` never blocks: what the descriptor refuses waits here.

    The descriptor is made non-blocking, so a write takes what the consumer
    has room for and returns; the rest waits, in order, up to ``limit`` bytes,
    and ``schedule`` brings a retry. Past the limit lines are dropped and
    counted. A terminal is left as it is (the shell shares it): the daemon
    logs to one only in the foreground, where a person is watching.
    """

    def __init__(
        self,
        stream: BinaryIO,
        schedule: Callable[[float, Callable[[], None]], object],
        prefix: bytes = b"",
        limit: int = LIMIT,
    ) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._schedule = schedule
        self._prefix = prefix  # the journal's priority prefix for the notice
        self._limit = limit
        self._backlog: list[bytes] = []
        self._waiting = 0  # bytes in the backlog
        self._dropped = 0
        self._retrying = False
        if not stream.isatty():
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            atexit.register(_restore, self._fd, flags)
        atexit.register(self.close)  # runs first: atexit calls in reverse

    def write(self, data: bytes) -> int:
        if self._backlog:
            self._hold(data)
            return len(data)
        written = self._send(data)
        if written < len(data):
            self._hold(data[written:])
        return len(data)

    def flush(self) -> None:
        """Each write goes straight to the descriptor; nothing is buffered above it."""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._fd

    def close(self, timeout: float = 2.0) -> None:
        """At exit: write what waits, and the count of what was dropped, for up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (self._backlog or self._dropped) and time.monotonic() < deadline:
            self._retry()
            if self._backlog:
                time.sleep(RETRY / 5)

    def _send(self, data: bytes) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:  # a closed or broken output: nobody to tell
            return len(data)

    def _hold(self, data: bytes) -> None:
        if self._waiting + len(data) > self._limit:
            self._dropped += data.count(b"\n")
        else:
            self._backlog.append(data)
            self._waiting += len(data)
        if not self._retrying:
            self._retrying = True
            self._schedule(RETRY, self._retry)

    def _retry(self) -> None:
        self._retrying = False
        data = b"".join(self._backlog)
        self._backlog, self._waiting = [], 0
        written = self._send(data)
        rest = data[written:]
        if rest:
            self._backlog, self._waiting = [rest], len(rest)
        elif self._dropped:  # the consumer is back: say what it missed
            self._backlog = [self._notice(self._dropped)]
            self._waiting = len(self._backlog[0])
            self._dropped = 0
        if self._backlog:
            self._retrying = True
            self._schedule(RETRY if rest else 0.0, self._retry)

    def _notice(self, dropped: int) -> bytes:
        event = {
            "lines": dropped,
            "reason": "log consumer too slow",
            "event": "log_lines_dropped",
            "level": "warning",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return self._prefix + orjson.dumps(event) + b"\n"


def _restore(fd: int, flags: int) -> None:
    """Leave the descriptor blocking again for whoever shares it after us."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


class Throttle:
    """A structlog processor: repeats of a noisy event within ``interval`` are only counted."""

    def __init__(
        self,
        events: frozenset[str],
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self._interval = interval
        self._clock = clock
        self._since: dict[tuple[str, str], float] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        name = event.get("event", "")
        if name not in self._events:
            return event
        key = (name, str(event.get("reason", "")))
        now = self._clock()
        since = self._since.get(key)
        if since is not None and now - since < self._interval:
            self._counts[key] = self._counts.get(key, 0) + 1
            raise structlog.DropEvent
        if len(self._since) > MAX_KEYS:  # reasons are fixed words; this only guards
            self._since.clear()
        self._since[key] = now
        return event

    def report(self) -> None:
        """Log what was suppressed since the last report (the daemon calls this on a timer)."""
        counts, self._counts = self._counts, {}
        log = structlog.get_logger("postgate")
        for (name, reason), count in sorted(counts.items()):
            log.warning("log_suppressed", suppressed_event=name, reason=reason, count=count)


__all__ = ["LIMIT", "Sink", "Throttle", "line_safe"]
