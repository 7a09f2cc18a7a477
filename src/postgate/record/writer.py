"""The recording's writer process: appends the blocks the daemon sends to the file.

A process, not a thread: whatever Python work a writer thread does (joining
batches, its bookkeeping, the hand-offs around each write) holds the
interpreter lock that the thread answering Postfix needs, whereas a process
has its own interpreter and runs on the other core, in the idle scheduling
class (`background`). The daemon's share is one non-blocking write(2) to a
pipe every few milliseconds (`postgate.record.recorder`); a slow disk fills the
pipe, never the answer path; and a daemon that dies loses only what it had
not yet handed over.

Input on stdin: request blocks, each ending with a blank line, and commands,
each a NUL, a JSON object and a newline. No block holds a NUL (the recorder
leaves out what could carry one), so no request can forge a command:

- ``{"open": PATH, "max_bytes": N, "keep": K}``: write to PATH from here on;
- ``{"close": true}``: fsync and close the file (recording switched off);
- ``{"ack": N}``: once everything before it is written, report ``ack`` N.

Output on the status descriptor (argv[1]): one JSON object per line, acks
and events for the daemon to log, each with the running totals ``written``
and ``lost``. At end of input (the daemon closed the pipe, or died) the
whole blocks received are written, the file is fsynced and closed, a last
status is sent, and the process exits.

Crash safety: every write(2) carries whole blocks. A SIGKILL of this
process can still cut one in the kernel's copy loop; `postgate.wire.policy_files`
drops such a cut tail when reading, and `trim_cut_tail` removes it the next
time the file is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from postgate.wire.policy_files import RECORDING_HEADER

HEADER_BYTES: Final = RECORDING_HEADER.encode()
COMMAND: Final = 0  # the NUL that starts a command
BLOCK_END: Final = b"\n\n"
# Below glibc's mmap threshold (128 KiB): a 1 MiB read buffer was mapped
# and unmapped on every read, 0.2 page faults and about 1 µs of system time
# per record (measured); a batch takes two or three reads instead.
READ_BYTES: Final = 64 * 1024
# Between batches the pipe gathers the next one: at 16,000 requests/s about
# 110 KB, two of the daemon's pushes, taken in two reads and two write(2)s.
BATCH_INTERVAL: Final = 0.01
FAILURE_LOG_PERIOD: Final = 60.0
_TAIL: Final = 256 * 1024  # more than one request can be (protocol.Limits.max_request)
# What a terminal's Ctrl-C, systemd's stop or an admin's toggle may send to
# the whole group; the daemon ends this process by closing the pipe instead.
HELD_SIGNALS: Final = frozenset(
    (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where blocks go and how the file rotates (``[record]``'s path, max_bytes, keep)."""

    path: Path
    max_bytes: int
    keep: int


class Status:
    """The line back to the daemon: acks and events, with the running totals."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.lost = 0

    def send(self, **fields: Any) -> None:
        fields.update(written=self.written, lost=self.lost)
        with contextlib.suppress(OSError):  # the daemon is gone: no one to tell
            write_all(self.fd, json.dumps(fields).encode() + b"\n")


class RecordingFile:
    """The open recording: appends whole blocks, rotates by size, repairs a cut tail."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.fd: int | None = None
        self.target: Target | None = None
        self.size = 0
        self.failed_at: float | None = None

    def write(self, data: bytes, target: Target | None) -> None:
        """Append ``data`` (whole blocks); a failure loses them, counted and reported."""
        if target is None:  # the daemon always opens first: defensive only
            self.status.lost += data.count(BLOCK_END)
            return
        while data:
            try:
                if self.fd is None or target != self.target:
                    self.open(target)
                take = self.fitting(data, target)
                self.append(data[:take])
            except OSError as exc:
                self.status.lost += data.count(BLOCK_END)
                self.failed(target, exc)
                return
            self.status.written += data.count(BLOCK_END, 0, take)
            data = data[take:]

    def fitting(self, data: bytes, target: Target) -> int:
        """How much of ``data`` goes into this file; rotates first if no block fits.

        Whole blocks only, so each file stays within ``max_bytes`` unless a
        single block is larger (it then has a file of its own).
        """
        limit = target.max_bytes
        if not limit or self.size + len(data) <= limit:
            return len(data)
        end = data.rfind(BLOCK_END, 0, max(0, limit - self.size))
        if end >= 0:
            return end + len(BLOCK_END)
        if self.size > len(HEADER_BYTES):
            self.rotate(target)
            return self.fitting(data, target)
        return data.find(BLOCK_END) + len(BLOCK_END)

    def append(self, data: bytes) -> None:
        assert self.fd is not None
        write_all(self.fd, data)
        self.size += len(data)

    def open(self, target: Target) -> None:
        self.close()
        path = target.path
        path.parent.mkdir(parents=True, exist_ok=True)
        removed = trim_cut_tail(path)
        if removed is None:  # appending would glue the next block to the cut line
            aside = path.with_name(f"{path.name}.cut")
            path.replace(aside)  # kept as it is, whatever ``keep`` says; a new file begins
            self.status.send(event="record_unrepairable", path=str(path), moved_to=str(aside))
        elif removed:
            self.status.send(event="record_repaired", path=str(path), removed_bytes=removed)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o640)
        self.target = target
        self.size = os.fstat(self.fd).st_size
        if self.size == 0:
            self.append(HEADER_BYTES)

    def rotate(self, target: Target) -> None:
        """path -> path.1 -> ... -> path.KEEP (the oldest falls off), then a fresh file."""
        self.close()
        path, keep = target.path, target.keep
        if keep == 0:
            path.unlink(missing_ok=True)
        for index in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        if keep:
            path.replace(path.with_name(f"{path.name}.1"))
        self.open(target)

    def failed(self, target: Target, exc: OSError) -> None:
        """Report at most once a period (a full disk fails every batch); retry on the next."""
        now = time.monotonic()
        if self.failed_at is None or now - self.failed_at >= FAILURE_LOG_PERIOD:
            self.status.send(event="record_write_failed", path=str(target.path), error=str(exc))
            self.failed_at = now
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
        self.target = None


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def trim_cut_tail(path: Path) -> int | None:
    """Cut a recording back to its last whole block; the bytes removed, None if it cannot.

    Only regular files that start with the recording header are touched:
    anything else at ``path`` is not ours to edit.
    """
    if not path.is_file():  # absent, or a FIFO or device someone pointed us at
        return 0
    with path.open("r+b") as f:
        head = f.read(len(HEADER_BYTES))
        size = f.seek(0, os.SEEK_END)
        if head != HEADER_BYTES or size == len(head):
            return 0
        start = max(len(head), size - _TAIL)
        f.seek(start)
        tail = f.read()
        if tail.endswith(BLOCK_END):
            return 0
        cut = tail.rfind(BLOCK_END)
        if cut < 0 and start > len(head):  # no block end in the last 256 KiB
            return None
        keep = start + cut + 2 if cut >= 0 else len(head)
        f.truncate(keep)
    return size - keep


class Writer:
    """Reads the daemon's stream; writes blocks, obeys commands, in stream order."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.file = RecordingFile(status)
        self.target: Target | None = None
        self.pending = bytearray()

    def run(self, source: int) -> None:
        while chunk := os.read(source, READ_BYTES):
            self.pending += chunk
            self.consume()
            if len(chunk) < READ_BYTES:
                time.sleep(BATCH_INTERVAL)
        self.finish()

    def consume(self) -> None:
        """Write the whole blocks received and run the complete commands, in order."""
        pending = self.pending
        done = 0  # pending[:done] is dealt with
        while (start := pending.find(COMMAND, done)) >= 0:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            self.blocks(bytes(pending[done:start]))
            self.command(json.loads(pending[start + 1 : end]))
            done = end + 1
        start = pending.find(COMMAND, done)
        whole = pending.rfind(BLOCK_END, done, len(pending) if start < 0 else start)
        if whole >= 0:
            self.blocks(bytes(pending[done : whole + len(BLOCK_END)]))
            done = whole + len(BLOCK_END)
        del pending[:done]

    def blocks(self, data: bytes) -> None:
        if data:
            self.file.write(data, self.target)

    def command(self, order: dict[str, Any]) -> None:
        if "open" in order:
            self.target = Target(Path(order["open"]), int(order["max_bytes"]), int(order["keep"]))
            if self.file.target != self.target:  # a reload: the old file is done, on disk
                self.file.close()
        elif "close" in order:
            self.file.close()
        elif "ack" in order:
            self.status.send(ack=int(order["ack"]))

    def finish(self) -> None:
        """End of input: what is left is a block cut by the daemon's death; drop it.

        A daemon that closes the pipe itself has sent whole blocks only, and
        one that died cannot log, so the last report carries totals only.
        """
        self.file.close()
        self.status.send()


def background() -> bool:
    """Run only on CPU time the daemon leaves idle (SCHED_IDLE); False if not allowed.

    Woken every batch, a writer of normal priority preempts the daemon on
    its core and evicts its caches: measured with a writer that made the
    blocks itself, the daemon's CPU per request rose by about what the
    writer used. An idle-class writer never
    preempts it and runs on the other core's spare time. When both cores
    are saturated it falls behind: the pipe fills, and records wait in the
    daemon up to ``max_pending``, then are dropped and counted, which is
    the bargain recording makes (the answer path first). Lowering one's own
    class needs no privilege; a seccomp filter may still refuse the call,
    and the writer then runs as it is.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return False
    return True


def main(argv: list[str]) -> int:
    # The daemon decides when this process ends, by closing the pipe: a
    # terminal's Ctrl-C or systemd's SIGTERM to the whole group must not cut
    # the last blocks off before the daemon has sent them. They arrive
    # blocked (`postgate.record.recorder`), so none was lost before this line.
    for signum in HELD_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    background()
    Writer(Status(int(argv[0]))).run(sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
