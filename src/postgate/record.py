"""Record the requests the daemon answers as a replayable request file.

Owns the ``[record]`` settings, the block format it writes (the request file
format of `postgate.corpus`, so a recording replays as is) and the writer
thread. The answer path only appends a reference to a bounded list
(`Recorder.add`); formatting, redaction, writing, rotation and fsync happen
in one thread this module owns, so a slow disk costs dropped (and counted)
records, never a late answer. Imports nothing from the rule engine or the
config loader (config.py imports this module), and no Twisted.

Crash safety: every ``os.write`` carries whole blocks, each ending with a
blank line. A SIGKILL can still cut a write in the kernel's copy loop; the
cut tail is dropped by `postgate.replay.whole_blocks` when read and trimmed
by the recorder the next time it opens the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import functools
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from postgate.problems import Problems
    from postgate.protocol import PolicyRequest

log = structlog.get_logger("postgate")

# First line of every recording file; `postgate.replay` keys on it.
RECORDING_HEADER: Final = "# postgate recording (replay with: postgate replay FILE)\n"
HEADER_BYTES: Final = RECORDING_HEADER.encode()
# Attributes holding an address or login whose local part identifies a person.
REDACTED: Final = ("sender", "recipient", "sasl_username", "sasl_sender")
FLUSH_INTERVAL: Final = 0.2
DROP_LOG_PERIOD: Final = 60.0
KEY_BYTES: Final = 32
_TAIL: Final = 256 * 1024  # more than one request can be (protocol.Limits.max_request)


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """The ``[record]`` table: where, whether, how big, how private."""

    path: Path | None = None
    enabled: bool = False
    max_bytes: int = 64 * 1024 * 1024  # rotate past this size; 0 never rotates
    keep: int = 5  # rotated files kept: path.1 (newest) .. path.keep
    redact: bool = False
    decisions: bool = True  # write '# expect:' / '# expect-rule:' lines
    max_pending: int = 10_000  # records waiting for the writer before drops start


_KEYS: Final = ("path", "enabled", "max_bytes", "keep", "redact", "decisions", "max_pending")


def parse_record_settings(
    raw: Mapping[str, Any], problems: Problems, base_dir: Path | None = None
) -> RecordSettings:
    """Validate a ``[record]`` table; a relative path is relative to ``base_dir``."""
    for key in raw:
        if key not in _KEYS:
            hint = difflib.get_close_matches(key, _KEYS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.error(f"record.{key}", f"unknown setting{extra}; known: {', '.join(_KEYS)}")
    base = RecordSettings()
    path = _path(raw.get("path"), problems, base_dir)
    enabled = _flag(raw, "enabled", base.enabled, problems)
    if enabled and path is None:
        problems.error("record.enabled", "recording needs record.path")
    return RecordSettings(
        path=path,
        enabled=enabled,
        max_bytes=_count(raw, "max_bytes", base.max_bytes, (0, 1 << 40), problems),
        keep=_count(raw, "keep", base.keep, (0, 1000), problems),
        redact=_flag(raw, "redact", base.redact, problems),
        decisions=_flag(raw, "decisions", base.decisions, problems),
        max_pending=_count(raw, "max_pending", base.max_pending, (1, 10_000_000), problems),
    )


def _path(value: Any, problems: Problems, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.error("record.path", f"must be a file name, not {value!r}")
        return None
    path = Path(value)
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def _flag(raw: Mapping[str, Any], key: str, default: bool, problems: Problems) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        problems.error(f"record.{key}", f"must be true or false, not {value!r}")
        return default
    return value


def _count(
    raw: Mapping[str, Any], key: str, default: int, bounds: tuple[int, int], problems: Problems
) -> int:
    value = raw.get(key, default)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.error(f"record.{key}", f"must be a whole number in {low}..{high}, not {value!r}")
        return default
    return value


def format_time(now: float) -> str:
    """ISO-8601 in UTC with microseconds: readable in the file, unambiguous to replay."""
    whole = math.floor(now)
    micro = round((now - whole) * 1_000_000)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{_second(whole)}.{micro:06d}Z"


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    # Records come many per second; the calendar arithmetic is done once each.
    return dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Redactor:
    """Replaces local parts by a keyed hash: stable for a key, useless without it.

    The same address always becomes the same ``h-<12 hex>``, so rules and
    expectations that match repeated addresses or domains still replay; rules
    that name a local part of a redacted attribute no longer match.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._seen: dict[str, str] = {}

    def local(self, text: str) -> str:
        hashed = self._seen.get(text)
        if hashed is None:
            raw = text.encode("utf-8", "surrogateescape")
            hashed = "h-" + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:12]
            if len(self._seen) > 100_000:
                self._seen.clear()
            self._seen[text] = hashed
        return hashed

    def address(self, value: str) -> str:
        local, at, domain = value.rpartition("@")
        if not at:
            return self.local(value) if value else value
        return f"{self.local(local)}@{domain}" if local else value

    def apply(self, attrs: dict[str, str], answer: str) -> str:
        """Redact ``attrs`` in place; return ``answer`` with the same values replaced.

        Templated replies may quote an address; replacing it keeps the
        recorded expectation equal to what replay renders from the redacted
        request, and keeps the address out of the file.
        """
        for name in REDACTED:
            value = attrs.get(name)
            if value:
                hidden = self.address(value)
                attrs[name] = hidden
                answer = answer.replace(value, hidden)
        return answer


def load_key(path: Path) -> bytes:
    """The redaction key kept beside the recording, created (0600) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
    return path.read_bytes()


def key_path(recording: Path) -> Path:
    return recording.with_name(recording.name + ".key")


def format_block(
    request: PolicyRequest,
    answer: str,
    rule: str,
    now: float,
    *,
    decisions: bool = True,
    redactor: Redactor | None = None,
) -> str:
    """One request in the request file format, ending with its blank line."""
    attrs = request.as_dict()
    if redactor is not None:
        answer = redactor.apply(attrs, answer)
    head = f"# time: {format_time(now)}\n"
    if decisions:
        head += f"# expect: {answer}\n# expect-rule: {rule}\n"
    if not _SAFE_NAMES.issuperset(attrs):
        attrs = {n: v for n, v in attrs.items() if _replayable(n)}
    return head + "".join([f"{n}={v}\n" for n, v in attrs.items()]) + "\n"


# Attribute names already known to read back as themselves: Postfix sends the
# same few dozen, so the check below runs once per name, not per record.
_SAFE_NAMES: set[str] = set()
_MAX_SAFE_NAMES: Final = 1024


def _replayable(name: str) -> bool:
    """Whether `postgate.corpus` reads ``name=`` back as this attribute.

    A name starting with '#' would read back as a comment (or forge an
    expectation), one with outer blanks is refused; Postfix sends neither, so
    such attributes are left out rather than making the recording unreadable.
    """
    if name != name.strip() or name.startswith("#"):
        return False
    if len(_SAFE_NAMES) < _MAX_SAFE_NAMES:
        _SAFE_NAMES.add(name)
    return True


Entry = tuple["PolicyRequest", str, str, float]


class Recorder:
    """Accepts records on the answer path; one thread of its own writes them."""

    def __init__(
        self, settings: RecordSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self.enabled = settings.enabled and settings.path is not None
        self._lock = threading.Lock()
        self._pending: list[Entry] = []
        self._waiters: list[threading.Event] = []
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._closing = False
        self.dropped = 0
        self._sink = _Sink()
        self._drops = _DropReport(clock)
        self._thread = threading.Thread(target=self._run, name="postgate-recorder", daemon=True)
        self._thread.start()

    @property
    def written(self) -> int:
        return self._sink.written

    def add(self, request: PolicyRequest, action_line: str, rule: str, now: float) -> None:
        """Queue one record; never waits for the disk (drops and counts instead)."""
        if not self.enabled:
            return
        with self._lock:
            pending = self._pending
            if len(pending) >= self._settings.max_pending:
                self.dropped += 1
                return
            pending.append((request, action_line, rule, now))
            first = len(pending) == 1
        if first:
            self._wake.set()

    def set_enabled(self, enabled: bool) -> bool:
        """Switch recording; returns the new state (off when no path is configured)."""
        self.enabled = enabled and self._settings.path is not None
        log.info("recording", enabled=self.enabled, path=str(self._settings.path))
        return self.enabled

    def reconfigure(self, settings: RecordSettings) -> None:
        """Use new settings from the next batch on (a reload); the old file is closed."""
        with self._lock:
            self._settings = settings
        self.enabled = settings.enabled and settings.path is not None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is written; False on timeout.

        After `close` there is no writer to wait for: True once it has ended.
        """
        done = threading.Event()
        with self._lock:
            if self._closing:
                return not self._thread.is_alive()
            self._waiters.append(done)
        self._wake.set()
        self._hurry.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, fsync, close the file and end the thread."""
        self.enabled = False
        with self._lock:
            self._closing = True
        self._wake.set()
        self._hurry.set()
        self._thread.join(timeout)

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
        with self._lock:
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            settings, closing = self._settings, self._closing
        lost = self._write(batch, settings)
        with self._lock:
            self.dropped += lost
            dropped = self.dropped
        self._drops.report(dropped, force=closing)
        for waiter in waiters:
            waiter.set()
        return closing

    def _write(self, batch: list[Entry], settings: RecordSettings) -> int:
        try:
            return self._sink.write(batch, settings)
        except Exception:  # the writer must outlive any bad record
            log.exception("record_failed", records=len(batch))
            return len(batch)


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

    def write(self, batch: list[Entry], settings: RecordSettings) -> int:
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

    def encode(self, batch: Iterable[Entry], settings: RecordSettings) -> bytes:
        redactor = self.redaction(settings)
        blocks = (
            format_block(
                request, answer, rule, now, decisions=settings.decisions, redactor=redactor
            )
            for request, answer, rule, now in batch
        )
        return "".join(blocks).encode("utf-8", "surrogateescape")

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
