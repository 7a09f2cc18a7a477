"""The recording's writer process: makes the daemon's records into blocks and appends them.

A process, in the idle scheduling class (`background`): its work never holds
the interpreter lock the answers need, nor preempts the daemon. A slow disk
fills the pipe to it, and the daemon drops and counts rather than wait.

Input: frames (`frame`: an 8-byte little-endian length, then a `marshal` dump;
the daemon runs this interpreter) of lists of records ``(request, answer,
rule, time[, action])`` for `Format.block` and, in their place, orders:
``{"path", "max_bytes", "keep", "decisions", "key"}`` (write there, so, from
here on; the first item) or ``{"close": True}`` (fsync and close: switched
off). Output: JSON lines, events for the daemon to log and the totals
``written`` and ``lost``. At end of input (the daemon stopped or died) the
file is fsynced and closed.

Crash safety: every write(2) carries whole blocks. A SIGKILL can still cut
one in the kernel's copy loop; `postgate.wire.policy_files` drops such a
cut tail when reading, and `trim_cut_tail` removes it at the next open.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Final

from postgate.record.blocks import Format, Redactor
from postgate.wire.policy_files import RECORDING_HEADER

HEADER: Final = RECORDING_HEADER.encode()
END: Final = b"\n\n"
READ_BYTES: Final = 64 * 1024  # below glibc's mmap threshold: no mapping per read
# The pipe gathers the next batch meanwhile. Waking every 10 ms cost the daemon about 4 %
# of its throughput at 38,000 requests/s (docs/performance.md); a full pipe pauses the daemon.
BATCH_INTERVAL: Final = 0.05
FAILURE_LOG_PERIOD: Final = 60.0
_TAIL: Final = 256 * 1024  # more than one request can be (max_request_bytes' default)
# What a terminal's Ctrl-C, systemd's stop or an admin's toggle may send to
# the whole group; the daemon ends this process by closing the pipe instead.
HELD_SIGNALS: Final = frozenset(
    (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
)


def frame(items: list[Any]) -> bytes:
    """What the daemon sends: ``items`` as one frame of the input."""
    data = marshal.dumps(items)
    return len(data).to_bytes(8, "little") + data  # a flush may send 4 GiB


class Writer:
    """Reads the daemon's frames: records to append, orders saying where and how."""

    def __init__(self, out: int = 1) -> None:
        self.out = out  # where reports go
        self.pending = bytearray()
        self.target: tuple[Path, int, int] | None = None  # path, max_bytes, keep
        self.shape = Format()
        self.fd: int | None = None
        self.size = 0
        self.written = self.lost = 0
        self.failures = 0  # records no block could be made of, not yet reported
        self.failed_at: dict[str, float] = {}

    def report(self, **fields: Any) -> None:
        fields.update(written=self.written, lost=self.lost)
        with contextlib.suppress(OSError):  # the daemon is gone: no one to tell
            write_all(self.out, json.dumps(fields).encode() + b"\n")

    def run(self, source: int = 0) -> None:
        while chunk := os.read(source, READ_BYTES):
            self.pending += chunk
            self.consume()
            if len(chunk) < READ_BYTES:
                time.sleep(BATCH_INTERVAL)
        self.finish()

    def finish(self) -> None:
        """End of input: what is left is a frame cut by the daemon's death: never sent whole."""
        self.close()
        self.report()

    def consume(self) -> None:
        """Obey the whole frames received, in order: blocks to write, orders between them."""
        data, start, blocks = self.pending, 0, list[bytes]()
        while len(data) >= start + 8:
            end = start + 8 + int.from_bytes(data[start : start + 8], "little")
            if end > len(data):
                break
            for item in marshal.loads(data[start + 8 : end]):  # noqa: S302 - from our daemon
                if isinstance(item, dict):
                    self.blocks(blocks)  # what came before goes where it was meant to
                    blocks = []
                    self.command(item)
                else:
                    blocks.append(self.block(item))
            start = end
        self.blocks(blocks)
        del data[:start]

    def block(self, record: tuple[Any, ...]) -> bytes:
        """The record's block; none (the record lost, reported) when none can be made."""
        try:
            return self.shape.block(*record)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the rest
            self.lost += 1
            self.failures += 1
            if self.due("record_failed"):
                self.report(event="record_failed", records=self.failures, error=repr(exc))
                self.failures = 0
            return b""

    def due(self, event: str) -> bool:
        """At most one report of ``event`` a period: a full disk fails every batch."""
        now = time.monotonic()
        if now - self.failed_at.get(event, -FAILURE_LOG_PERIOD) < FAILURE_LOG_PERIOD:
            return False
        self.failed_at[event] = now
        return True

    def command(self, order: dict[str, Any]) -> None:
        if "close" in order:
            self.close()  # the next block opens it again
            return
        key = order.get("key")
        self.shape = Format(order.get("decisions", True), Redactor(key) if key else None)
        target = (Path(order["path"]), int(order["max_bytes"]), int(order["keep"]))
        if target != self.target:  # a reload: the old file is done, on disk
            self.close()
            self.target = target

    def blocks(self, made: list[bytes]) -> None:
        """Append whole blocks, rotating between them; a failure loses them, counted."""
        data = b"".join(made)
        while data and self.target is not None:
            try:
                if self.fd is None:
                    self.open()
                take = self.fitting(data)
                write_all(self.fd, data[:take])  # type: ignore[arg-type]
            except OSError as exc:
                self.lost += data.count(END)
                if self.due("record_write_failed"):
                    self.report(
                        event="record_write_failed", path=str(self.target[0]), error=str(exc)
                    )
                self.close()  # retried at the next batch
                return
            self.size += take
            self.written += data.count(END, 0, take)
            data = data[take:]
        self.lost += data.count(END)  # no file named: nowhere to go

    def fitting(self, data: bytes) -> int:
        """How much of ``data`` goes into this file; rotates first if no block fits.

        Whole blocks only, so each file stays within ``max_bytes`` unless a
        single block is larger (it then has a file of its own).
        """
        limit = self.target[1] if self.target else 0
        if not limit or self.size + len(data) <= limit:
            return len(data)
        end = data.rfind(END, 0, max(0, limit - self.size))
        if end >= 0:
            return end + 2
        if self.size > len(HEADER):
            self.rotate()
            return self.fitting(data)
        return data.find(END) + 2

    def open(self) -> None:
        assert self.target is not None
        path = self.target[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        removed = trim_cut_tail(path)
        if removed is None:  # appending would glue the next block to the cut line
            aside = path.with_name(f"{path.name}.cut")
            path.replace(aside)  # kept as it is, whatever ``keep`` says; a new file begins
            self.report(event="record_unrepairable", path=str(path), moved_to=str(aside))
        elif removed:
            self.report(event="record_repaired", path=str(path), removed_bytes=removed)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o640)
        self.size = os.fstat(self.fd).st_size
        if self.size == 0:
            write_all(self.fd, HEADER)
            self.size = len(HEADER)

    def rotate(self) -> None:
        """path -> path.1 -> ... -> path.KEEP (the oldest falls off), then a fresh file."""
        assert self.target is not None
        self.close()
        path, _, keep = self.target
        if keep == 0:
            path.unlink(missing_ok=True)
        for index in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        if keep:
            path.replace(path.with_name(f"{path.name}.1"))
        self.open()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)


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
        head = f.read(len(HEADER))
        size = f.seek(0, os.SEEK_END)
        if head != HEADER or size == len(head):
            return 0
        start = max(len(head), size - _TAIL)
        f.seek(start)
        tail = f.read()
        if tail.endswith(END):
            return 0
        cut = tail.rfind(END)
        if cut < 0 and start > len(head):  # no block end in the last 256 KiB
            return None
        keep = start + cut + 2 if cut >= 0 else len(head)
        f.truncate(keep)
    return size - keep


def background() -> bool:
    """Run only on CPU time the daemon leaves idle (SCHED_IDLE); False if not allowed.

    A writer of normal priority, woken every batch, preempts the daemon on
    its core and evicts its caches (measured: the daemon's CPU per request
    rose by about what the writer used). Lowering one's own class needs no
    privilege; a seccomp filter may still refuse it.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return False
    return True


def main() -> int:
    # The daemon ends this process by closing the pipe: a Ctrl-C or SIGTERM to
    # the whole group must not cut the last blocks off before they are sent.
    # They arrive blocked (`postgate.record.recorder`), so none is lost before this.
    for signum in HELD_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    background()
    Writer().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
