"""Record the requests the daemon answers as a replayable request file.

Owns the writer thread and the recording file. The answer path only appends
to a bounded queue (`Recorder.add`); redaction, writing, rotation and fsync
happen in one thread this module owns, started the first time recording is
on, so a slow disk costs dropped (and counted) records, never a late answer.
The settings live in `postgate.record_settings`, the block format and
redaction in `postgate.record_format`; their public names are re-exported
here. Imports nothing from the rule engine or the config loader (config.py
imports this package's settings), and no Twisted.

Crash safety: every ``os.write`` carries whole blocks, each ending with a
blank line. A SIGKILL can still cut a write in the kernel's copy loop; the
cut tail is dropped by `postgate.corpus.whole_blocks` when read and trimmed
by the recorder the next time it opens the file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from postgate.corpus import RECORDING_HEADER
from postgate.record_format import (
    CopiedBlocks,
    Redactor,
    encode_block,
    format_block,
    format_time,
    key_path,
    load_key,
)
from postgate.record_settings import RecordSettings, parse_record_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from postgate.protocol import PolicyRequest
    from postgate.replies import Action

log = structlog.get_logger("postgate")

HEADER_BYTES: Final = RECORDING_HEADER.encode()
# Short, so that a batch is written while its blocks are still in the CPU's
# cache (at 16,000 requests/s, 10 ms is about 160 KB): in two alternating A/B
# runs, recording cost 1.5 and 4 points less throughput than with 0.2 s
# batches of 3 MB, which is within this benchmark machine's noise.
FLUSH_INTERVAL: Final = 0.01
DROP_LOG_PERIOD: Final = 60.0
_TAIL: Final = 256 * 1024  # more than one request can be (protocol.Limits.max_request)


Entry = tuple["PolicyRequest", str, str, float, "Action | None"]


class Recorder:
    """Accepts records on the answer path; one thread of its own writes them.

    `add` is called from one thread, the one that answers, and takes no lock:
    the queue is a deque, whose append and popleft are atomic (the documented
    thread-safe use of `collections.deque`); the writer pops until it finds
    the queue empty, and the add that makes the queue non-empty wakes it.
    Counters written by both threads are kept apart (`_full`, `_lost`), each
    written by one thread only. The lock orders the rest: settings, waiters,
    closing.
    """

    def __init__(
        self, settings: RecordSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self.enabled = settings.enabled and settings.path is not None
        self._blocks = _blocks(settings)
        self._max_pending = settings.max_pending
        self._lock = threading.Lock()
        self._pending: deque[Entry | bytes] = deque()
        self._waiters: list[threading.Event] = []
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._closing = False
        self._full = 0  # refused by add: written by the answering thread only
        self._lost = 0  # lost to write errors: written by the writer thread only
        self._sink = _Sink()
        self._drops = _DropReport(clock)
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._start()

    @property
    def written(self) -> int:
        return self._sink.written

    @property
    def dropped(self) -> int:
        """Records never written: refused with the queue full, or lost to errors."""
        return self._full + self._lost

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

        A request whose received lines can be copied is encoded here
        (`CopiedBlocks`: a few memchr calls and one join); everything else is
        formatted by the writer thread. Encoding here rather than there keeps the writer
        thread from holding the interpreter lock for whole batches, which
        would stall the answers of every connection for milliseconds at a time.
        """
        if not self.enabled:
            return
        pending = self._pending
        if len(pending) >= self._max_pending:
            self._full += 1
            return
        blocks = self._blocks
        block = None if blocks is None else blocks.block(request, action_line, rule, now)
        pending.append((request, action_line, rule, now, action) if block is None else block)
        if len(pending) == 1:  # the writer emptied the queue: it waits for this
            self._wake.set()

    def set_enabled(self, enabled: bool) -> bool:
        """Switch recording; returns the new state (off when no path is configured)."""
        on = enabled and self._settings.path is not None and self._start()
        self.enabled = on
        log.info("recording", enabled=self.enabled, path=str(self._settings.path))
        return self.enabled

    def reconfigure(self, settings: RecordSettings) -> None:
        """Use new settings from the next batch on (a reload); the old file is closed."""
        with self._lock:
            self._settings = settings
        self._blocks = _blocks(settings)
        self._max_pending = settings.max_pending
        self.enabled = settings.enabled and settings.path is not None and self._start()

    def _start(self) -> bool:
        """Start the writer on first use; False once closed (nothing will write)."""
        with self._lock:
            if self._closing:
                return False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="postgate-recorder", daemon=True
                )
                self._thread.start()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is written; False on timeout.

        After `close` there is no writer to wait for: True once it has ended.
        """
        done = threading.Event()
        with self._lock:
            thread = self._thread
            if thread is None:  # never enabled: nothing was queued
                return True
            if self._closing:
                return not thread.is_alive()
            self._waiters.append(done)
        self._wake.set()
        self._hurry.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, fsync, close the file and end the thread."""
        self.enabled = False
        with self._lock:
            self._closing = True
            thread = self._thread
        if thread is None:
            return
        self._wake.set()
        self._hurry.set()
        thread.join(timeout)

    def _run(self) -> None:
        closing = False
        while not closing:
            self._wake.wait()
            self._hurry.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self._hurry.clear()
            closing = self._step()
        self._sink.close()

    def _step(self) -> bool:
        """Write one batch, account for losses, release flush waiters."""
        with self._lock:  # waiters first: what they wait for is queued already
            waiters, self._waiters = self._waiters, []
            settings, closing = self._settings, self._closing
        pending, batch = self._pending, []
        while pending:  # until empty: an add seeing it non-empty did not wake us
            batch.append(pending.popleft())
        self._lost += self._write(batch, settings)
        self._drops.report(self.dropped, force=closing)
        for waiter in waiters:
            waiter.set()
        return closing

    def _write(self, batch: list[Entry | bytes], settings: RecordSettings) -> int:
        try:
            return self._sink.write(batch, settings)
        except Exception:  # the writer must outlive any bad record
            log.exception("record_failed", records=len(batch))
            return len(batch)


def _blocks(settings: RecordSettings) -> CopiedBlocks | None:
    """The answer path's block builder; none when redacting (the writer redacts)."""
    return None if settings.redact else CopiedBlocks(decisions=settings.decisions)


@dataclass(slots=True)
class _DropReport:
    """Logs dropped records at most once per period, so a flood cannot flood the log."""

    clock: Callable[[], float]
    reported: int = 0
    last: float | None = None

    def report(self, dropped: int, *, force: bool = False) -> None:
        if dropped <= self.reported:
            return
        now = self.clock()
        if force or self.last is None or now - self.last >= DROP_LOG_PERIOD:
            log.warning("record_dropped", dropped=dropped - self.reported, total=dropped)
            self.reported, self.last = dropped, now


class _Sink:
    """The open recording file; used by the writer thread only."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: Path | None = None
        self.size = 0
        self.written = 0
        self.redactor: Redactor | None = None
        self.failed_at: float | None = None

    def write(self, batch: list[Entry | bytes], settings: RecordSettings) -> int:
        """Append ``batch``; returns how many records were lost to an I/O error."""
        if not batch or settings.path is None:
            return len(batch)
        try:
            if settings.path != self.path or self.fd is None:
                self.open(settings.path)
            data = self.encode(batch, settings)
            if settings.max_bytes and self.size and self.size + len(data) > settings.max_bytes:
                self.rotate(settings.path, settings.keep)
            self.append(data)
        except OSError as exc:
            self.failed(settings.path, exc)
            return len(batch)
        self.written += len(batch)
        return 0

    def failed(self, path: Path, exc: OSError) -> None:
        now = time.monotonic()
        if self.failed_at is None or now - self.failed_at >= DROP_LOG_PERIOD:
            log.error("record_write_failed", path=str(path), error=str(exc))
            self.failed_at = now
        self.close()

    def encode(self, batch: list[Entry | bytes], settings: RecordSettings) -> bytes:
        try:  # usually all blocks copied on the answer path: one join, no loop
            return b"".join(batch)  # type: ignore[arg-type]
        except TypeError:  # some records are still to be formatted
            return self.format(batch, settings)

    def format(self, batch: Iterable[Entry | bytes], settings: RecordSettings) -> bytes:
        redactor = self.redaction(settings)
        blocks = [
            entry
            if isinstance(entry, bytes)
            else encode_block(
                *entry[:4], decisions=settings.decisions, redactor=redactor, action=entry[4]
            )
            for entry in batch
        ]
        return b"".join(blocks)

    def redaction(self, settings: RecordSettings) -> Redactor | None:
        if not settings.redact or settings.path is None:
            return None
        if self.redactor is None:
            self.redactor = Redactor(load_key(key_path(settings.path)))
        return self.redactor

    def append(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def open(self, path: Path) -> None:
        self.close()
        self.redactor = None
        path.parent.mkdir(parents=True, exist_ok=True)
        trim_cut_tail(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o640)
        self.path = path
        self.size = os.fstat(self.fd).st_size
        if self.size == 0:
            self.append(HEADER_BYTES)

    def rotate(self, path: Path, keep: int) -> None:
        """path -> path.1 -> ... -> path.KEEP (the oldest falls off), then a fresh file."""
        self.close()
        if keep == 0:
            path.unlink(missing_ok=True)
        for index in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        if keep:
            path.replace(path.with_name(f"{path.name}.1"))
        self.open(path)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
        self.path = None


def trim_cut_tail(path: Path) -> int:
    """Cut a recording back to its last whole block; returns the bytes removed.

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
        if tail.endswith(b"\n\n"):
            return 0
        cut = tail.rfind(b"\n\n")
        if cut < 0 and start > len(head):
            log.error("record_unrepairable", path=str(path), reason="no block end in the tail")
            return 0
        keep = start + cut + 2 if cut >= 0 else len(head)
        f.truncate(keep)
    log.warning("record_repaired", path=str(path), removed_bytes=size - keep)
    return size - keep


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
