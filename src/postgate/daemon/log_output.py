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
event in an interval is logged, the rest are counted and reported once, as
``log_suppressed``, when the interval is over. Keys are event names only: a
reason can quote what a peer sent, and must not make a new key.

`line_safe` escapes the three characters that JSON allows raw but that
Unicode-aware line splitters treat as line ends (U+0085, U+2028, U+2029).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import stat
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping
    from typing import BinaryIO

LIMIT: Final = 8 << 20
RETRY: Final = 0.05  # seconds between tries while the consumer takes nothing
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
    """A file-like writer whose ``write`` never blocks: what the consumer refuses waits here.

    Non-blocking without touching the descriptor's flags, which its file
    description shares with stderr and with whoever started us: a socket
    (journald) is sent to with ``MSG_DONTWAIT``; a pipe is reopened through
    /proc as a private non-blocking description. A write takes what the
    consumer has room for; the rest waits, in order, up to ``limit`` bytes,
    and ``schedule`` brings a retry. Past the limit whole lines are dropped
    and counted. Files and terminals are written as they are: a disk that
    stalls is not a consumer's choice, and a terminal has a person watching.
    """

    def __init__(
        self,
        stream: BinaryIO,
        schedule: Callable[[float, Callable[[], None]], object],
        prefix: bytes = b"",
        limit: int = LIMIT,
    ) -> None:
        self._stream = stream
        self._schedule = schedule
        self._prefix = prefix  # the journal's priority prefix for the notice
        self._limit = limit
        self._backlog: deque[memoryview] = deque()
        self._waiting = 0  # bytes in the backlog
        self._dropped = 0
        self._retrying = False
        self._send = _sender(stream.fileno())
        atexit.register(self.close)

    def write(self, data: bytes) -> int:
        if self._backlog:
            self._hold(memoryview(data), whole=True)
            return len(data)
        written = self._send(data)
        if written < len(data):  # the rest of a line already begun is never dropped
            self._hold(memoryview(data)[written:], whole=False)
        return len(data)

    def flush(self) -> None:
        """Each write goes straight to the consumer; nothing is buffered above it."""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def close(self, timeout: float = 2.0) -> None:
        """At exit: write what waits, and the count of what was dropped, for up to ``timeout`` s."""
        if self._dropped:  # first, behind the line begun: the drain may not finish
            notice = memoryview(self._notice(self._dropped))
            self._backlog.insert(min(1, len(self._backlog)), notice)
            self._waiting += len(notice)
            self._dropped = 0
        deadline = time.monotonic() + timeout
        while (self._backlog or self._dropped) and time.monotonic() < deadline:
            self._retry()
            if self._backlog:
                time.sleep(RETRY / 5)

    def _hold(self, data: memoryview, *, whole: bool) -> None:
        if whole and self._waiting + len(data) > self._limit:
            self._dropped += data.tobytes().count(b"\n")
        else:
            self._backlog.append(data)
            self._waiting += len(data)
        if not self._retrying:
            self._retrying = True
            self._schedule(RETRY, self._retry)

    def _retry(self) -> None:
        """Write from the front of the backlog until the consumer refuses (no copying)."""
        self._retrying = False
        backlog = self._backlog
        while backlog:
            piece = backlog[0]
            written = self._send(piece)
            self._waiting -= written
            if written < len(piece):
                backlog[0] = piece[written:]
                break
            backlog.popleft()
        if not backlog and self._dropped:  # the consumer is back: say what it missed
            notice = self._notice(self._dropped)
            self._dropped = 0
            backlog.append(memoryview(notice))
            self._waiting += len(notice)
        if backlog:
            self._retrying = True
            self._schedule(RETRY, self._retry)

    def _notice(self, dropped: int) -> bytes:
        event = {
            "lines": dropped,
            "reason": "log consumer too slow",
            "event": "log_lines_dropped",
            "level": "warning",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return self._prefix + orjson.dumps(event) + b"\n"


def _sender(fd: int) -> Callable[[bytes | memoryview], int]:
    """How to write to ``fd`` without waiting, and without changing its flags."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=os.dup(fd))

        def send(data: bytes | memoryview) -> int:
            try:
                return sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return 0
            except OSError:  # a closed consumer: nobody left to tell
                return len(data)

        return send
    if stat.S_ISFIFO(mode):
        with contextlib.suppress(OSError):
            fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def write(data: bytes | memoryview) -> int:
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return len(data)

    return write


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
        key = (name, "")  # the reason may carry peer text: it must not make new keys
        now = self._clock()
        since = self._since.get(key)
        if since is not None and now - since < self._interval:
            self._counts[key] = self._counts.get(key, 0) + 1
            raise structlog.DropEvent
        self._since[key] = now
        return event

    def report(self) -> None:
        """Log what was suppressed since the last report (the daemon calls this on a timer)."""
        counts, self._counts = self._counts, {}
        log = structlog.get_logger("postgate")
        for (name, _), count in sorted(counts.items()):
            log.warning("log_suppressed", suppressed_event=name, count=count)


__all__ = ["LIMIT", "Sink", "Throttle", "line_safe"]
