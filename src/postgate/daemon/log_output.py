"""Where the daemon's log lines go: off the reactor thread, bounded, and never forged.

A log consumer can stall (journald under load, a paused ``| tee``). Written
from the reactor thread, one full pipe would stop every answer, so the daemon
hands its lines to `Sink`, whose thread does the blocking write; past
``limit`` bytes waiting, lines are dropped and counted, and the count is
written (``log_lines_dropped``) as soon as the consumer takes lines again.

`Throttle` keeps one client from flooding the log with the same event
(``connection_refused`` thousands of times a second): the first of each
(event, reason) in an interval is logged, the rest are counted and reported
once, as ``log_suppressed``, when the interval is over.

`line_safe` escapes the three characters that JSON allows raw but that
Unicode-aware line splitters treat as line ends (U+0085, U+2028, U+2029).
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping
    from typing import BinaryIO

LIMIT: Final = 8 << 20
MAX_KEYS: Final = 1000
_BREAKS: Final = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def line_safe(line: bytes) -> bytes:
    # Both byte pairs are rare in practice: test before paying for replace().
    if b"\xc2\x85" in line or b"\xe2\x80" in line:
        for raw, escaped in _BREAKS:
            line = line.replace(raw, escaped)
    return line


class Sink:
    """A file-like writer whose ``write`` never blocks; a thread does the writing."""

    def __init__(self, stream: BinaryIO, prefix: bytes = b"", limit: int = LIMIT) -> None:
        self._stream = stream
        self._prefix = prefix  # the journal's priority prefix for the notice
        self._limit = limit
        self._lock = threading.Condition()
        self._chunks: list[bytes] = []
        self._waiting = 0  # bytes accepted and not yet written
        self._dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="postgate-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._waiting + len(data) > self._limit:
                self._dropped += data.count(b"\n")
                return 0
            self._chunks.append(data)
            self._waiting += len(data)
            self._lock.notify()
        return len(data)

    def flush(self) -> None:
        """Lines leave as soon as the thread can write them; nothing to force."""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def close(self, timeout: float = 2.0) -> None:
        """Write what waits, for up to ``timeout`` seconds (at exit)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._chunks or self._closed):
                    self._lock.wait()
                if not self._chunks:
                    return
                chunks, self._chunks = self._chunks, []
                dropped, self._dropped = self._dropped, 0
            data = b"".join(chunks)
            if dropped:
                data = self._notice(dropped) + data
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stdout: nothing left to tell
            with self._lock:
                self._waiting -= sum(map(len, chunks))

    def _notice(self, dropped: int) -> bytes:
        event = {
            "lines": dropped,
            "reason": "log consumer too slow",
            "event": "log_lines_dropped",
            "level": "warning",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return self._prefix + orjson.dumps(event) + b"\n"


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
