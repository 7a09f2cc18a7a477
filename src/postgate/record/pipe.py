"""The daemon's end of the pipe to the recording's writer process.

`postgate.record.recorder` queues blocks and commands; this module owns what crosses
the process boundary: spawning ``python -m postgate.record.writer`` with
the two pipes (records in, reports out), the command framing both sides
share, and reading the writer's reports. The other end is
`postgate.record.writer`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import structlog

from postgate.record.writer import HELD_SIGNALS

if TYPE_CHECKING:
    from postgate.config.record import RecordSettings

log = structlog.get_logger("postgate")

# Holds about 90 ms of records at 16,000 requests/s: the writer's start and
# its 10 ms batches fit, so the daemon rarely keeps records back itself.
PIPE_BYTES: Final = 1 << 20
COMMAND_START: Final = b"\0"


def command(**order: Any) -> bytes:
    """A command as the writer reads it: NUL, one JSON object, newline."""
    return COMMAND_START + json.dumps(order).encode() + b"\n"


def open_command(settings: RecordSettings) -> bytes:
    """Write to ``settings.path`` from here on, rotating as they say."""
    return command(open=str(settings.path), max_bytes=settings.max_bytes, keep=settings.keep)


def time_left(deadline: float | None) -> float:
    """Seconds to ``deadline`` (a day when there is none), never negative."""
    if deadline is None:
        return 86400.0
    return max(0.0, deadline - time.monotonic())


class WriterProcess:
    """One writer process and the two pipes to it: records in, reports out."""

    def __init__(self, process: subprocess.Popen[bytes], pipe: int, status: int) -> None:
        self.process = process
        self.pipe = pipe
        self.status = status
        self.partial = b""
        self.acked = 0
        self.written = 0
        self.lost = 0
        self.ended = False

    @classmethod
    def start(cls) -> WriterProcess:
        """Spawn ``python -m postgate.record.writer`` with the daemon's interpreter.

        The pipe's far ends are closed here at once, so that the writer sees
        end of input when the daemon dies, and the daemon EPIPE when the
        writer dies. Both ends here are close-on-exec and non-blocking.
        """
        records, feed = os.pipe()
        status, report = os.pipe()
        # Born with these blocked (a mask survives exec), the writer ignores
        # them before they can end it: no window at its start-up in which a
        # stop would cut the recording short (`record_writer.main`).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                [sys.executable, "-m", "postgate.record.writer", str(report)],
                stdin=records,
                pass_fds=(report,),
            )
        except OSError:
            for fd in (feed, status):
                os.close(fd)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(records)
            os.close(report)
        os.set_blocking(feed, False)
        os.set_blocking(status, False)
        with contextlib.suppress(OSError):  # not allowed above fs.pipe-max-size: keep 64 KiB
            fcntl.fcntl(feed, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return cls(process, feed, status)

    def alive(self) -> bool:
        return not self.ended and self.process.poll() is None

    def read(self, wait: float) -> list[dict[str, Any]]:
        """The reports that have arrived, waiting up to ``wait`` seconds for the first."""
        if self.ended:
            return []
        if wait > 0.0:
            select.select([self.status], [], [], wait)
        try:
            data = os.read(self.status, 65536)
        except BlockingIOError:
            return []
        if not data:
            self.ended = True
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        reports = [json.loads(line) for line in lines if line]
        for report in reports:
            self.written, self.lost = report["written"], report["lost"]
            self.acked = max(self.acked, report.get("ack", 0))
        return reports

    def finish(self, deadline: float | None) -> list[dict[str, Any]]:
        """End of input for the writer; its last reports, once it has exited."""
        os.close(self.pipe)
        self.pipe = -1
        reports: list[dict[str, Any]] = []
        while not self.ended and time_left(deadline) > 0.0:
            reports += self.read(wait=min(time_left(deadline), 1.0))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(max(time_left(deadline), 0.1))
        if self.process.poll() is None:  # wedged on a dead disk: its blocks are lost
            log.error("record_writer_stuck", pid=self.process.pid)
            self.process.kill()
            self.process.wait()
        return reports

    def discard(self) -> None:
        for fd in (self.pipe, self.status):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pipe = self.status = -1
        self.ended = True
