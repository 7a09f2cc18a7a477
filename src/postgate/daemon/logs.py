"""structlog setup, and the bridge that routes Twisted's own events into it.

Owns the log line format; everything else only calls ``structlog.get_logger``.
Request values are only ever rendered as values of keys (JSON-escaped, or
``repr``-quoted on a console), so no sender, HELO name or recipient can start
a new line or imitate another field.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

import orjson
import structlog
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import provider

from postgate.daemon.log_output import Sink, Throttle, line_safe

if TYPE_CHECKING:
    from collections.abc import MutableMapping

# The request attributes every `decision` event carries (and `evaluation_failed`).
DECISION_FIELDS: Final = ("protocol_state", "client_address", "sender", "recipient")

# sd-daemon(3) priority prefixes: journald turns them into the PRIORITY field,
# which is what makes `journalctl -p warning -u postgate` work.
_SD_PREFIX: Final = {
    "debug": b"<7>",
    "info": b"<6>",
    "warning": b"<4>",
    "error": b"<3>",
    "critical": b"<2>",
    "exception": b"<3>",
}

# Events one misbehaving peer or a broken disk can repeat thousands of times
# a second; `Throttle.report`, on the status timer, says how many were held back.
THROTTLE: Final = Throttle(
    frozenset(
        {
            "connection_refused",
            "connection_silent",
            "protocol_error",
            "request_timeout",
            "peer_not_reading",
            "record_repaired",
            "record_write_failed",
            "record_failed",
        }
    )
)

_TWISTED_LEVELS: Final = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}


def journal_wanted(environ: Mapping[str, str], stream: BinaryIO) -> bool:
    """True when our stdout is the journal stream systemd gave us.

    ``JOURNAL_STREAM`` is ``device:inode`` of that stream; a redirect (say,
    to a file in a test) changes the inode, and then no prefix is wanted.
    """
    value = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _render_json(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> bytes:
    try:
        return line_safe(orjson.dumps(event, default=repr))
    except TypeError:
        # Surrogate-escaped request bytes are not valid UTF-8; show them as
        # \udcXX escapes, which keeps the original byte visible. Only this
        # rare path pays for the scan.
        return line_safe(orjson.dumps(_escape_surrogates(event), default=repr))


def _escape_surrogates(event: MutableMapping[str, Any]) -> dict[str, Any]:
    return {
        key: value.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        if isinstance(value, str)
        else value
        for key, value in event.items()
    }


class _Timestamp:
    """ISO-8601 UTC timestamps with milliseconds, formatted once per second.

    structlog's TimeStamper builds a datetime per event; on the per-request
    path that costs more than rendering the rest of the line.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._milli = -1
        self._text = ""

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        event["timestamp"] = self.text()
        return event

    def text(self) -> str:
        milli = time.time_ns() // 1_000_000
        if milli != self._milli:  # a busy daemon logs many events per millisecond
            self._milli = milli
            second, rest = divmod(milli, 1000)
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._text = f"{self._prefix}.{rest:03d}Z"
        return self._text


def _prefix_for_journal(_logger: Any, method: str, event: Any) -> Any:
    return _SD_PREFIX.get(method, b"<6>") + event


def _console_safe(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    return _escape_surrogates(event)


def configure(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: BinaryIO | None = None,
    environ: Mapping[str, str] | None = None,
    cache: bool = True,
    schedule: Callable[[float, Callable[[], None]], object] | None = None,
) -> None:
    """Configure structlog once, for the daemon or a command-line tool.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal,
    JSON lines otherwise, which is what journald and log shippers want).
    With ``schedule`` (the daemon's ``reactor.callLater``) output goes
    through a `log_output.Sink`, so a stalled log consumer never stalls an
    answer.
    """
    out = stream if stream is not None else sys.stdout.buffer
    env = os.environ if environ is None else environ
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    journal = journal_wanted(env, out)
    if schedule is not None:
        out = cast("BinaryIO", Sink(out, schedule, _SD_PREFIX["warning"] if journal else b""))
    timestamp = _Timestamp()
    _ACTIVE.clear()
    if not console and logging.getLevelNamesMapping()[level.upper()] <= logging.INFO:
        _ACTIVE.append(_JsonTarget(out, _SD_PREFIX["info"] if journal else b"", timestamp))
    processors: list[Any] = [structlog.processors.add_log_level, THROTTLE, timestamp]
    if console:
        processors += [_console_safe, structlog.dev.ConsoleRenderer(colors=False), _encode_text]
    else:
        processors += [structlog.processors.dict_tracebacks, _render_json]
    if journal:
        processors.append(_prefix_for_journal)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.BytesLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )


@dataclass(frozen=True, slots=True)
class _JsonTarget:
    """Where `configure` sends JSON lines, for writers that bypass the chain."""

    stream: BinaryIO
    prefix: bytes
    timestamp: _Timestamp


# rule, action sent, dry_run, microseconds taken, the request's attributes.
DecisionWriter = Callable[[str, str, bool, int, Mapping[str, str]], None]

# The JSON target of the last `configure`, if it logs info events as JSON.
_ACTIVE: list[_JsonTarget] = []


class DecisionLog:
    """Writes the per-request ``decision`` event, batched per reactor turn.

    The line is the one the structlog chain would render (same keys, same
    timestamp and journald prefix), built without the chain's per-call
    machinery, which cost more than everything else a request needs but the
    socket calls. Lines are joined and written once per reactor turn, so a
    busy daemon makes one write(2) for many requests instead of one each.
    """

    def __init__(
        self, target: _JsonTarget, schedule: Callable[[Callable[[], None]], object]
    ) -> None:
        self._target = target
        self._prefix = target.prefix
        self._stamp = target.timestamp
        self._schedule = schedule
        self._pending: list[bytes] = []

    def __call__(
        self, rule: str, action: str, dry_run: bool, us: int, raw: Mapping[str, str]
    ) -> None:
        get = raw.get
        fields = {
            "rule": rule,
            "action": action,
            "dry_run": dry_run,
            "us": us,
            # DECISION_FIELDS, spelled out: no loop per request.
            "protocol_state": get("protocol_state", ""),
            "client_address": get("client_address", ""),
            "sender": get("sender", ""),
            "recipient": get("recipient", ""),
            "event": "decision",
            "level": "info",
            "timestamp": self._stamp.text(),
        }
        try:
            line = self._prefix + orjson.dumps(fields) + b"\n"
        except TypeError:  # surrogate-escaped bytes: `_render_json` shows them
            line = self._prefix + _render_json(None, "info", fields) + b"\n"
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            self._schedule(self.flush)

    def flush(self) -> None:
        if self._pending:
            data = line_safe(b"".join(self._pending))  # one scan for the whole batch
            self._pending.clear()
            self._target.stream.write(data)
            self._target.stream.flush()


def decision_log(schedule: Callable[[Callable[[], None]], object]) -> DecisionLog | None:
    """The fast ``decision`` writer for the current configuration, if it applies.

    None when events go to a console renderer, are filtered out by level, or
    logging was never configured (tests capturing structlog events): then the
    caller logs through structlog as usual.
    """
    return DecisionLog(_ACTIVE[0], schedule) if _ACTIVE else None


def _encode_text(_logger: Any, _method: str, event: Any) -> Any:
    return event.encode("utf-8", "backslashreplace")


@provider(ILogObserver)
def _twisted_observer(event: Mapping[str, Any]) -> None:
    level = _TWISTED_LEVELS.get(event.get("log_level", LogLevel.info), "info")
    text = formatEvent(dict(event))
    log = structlog.get_logger("twisted")
    failure = event.get("log_failure")
    fields: dict[str, Any] = {"namespace": event.get("log_namespace", "")}
    if failure is not None:
        fields["exception"] = failure.getTraceback()
    getattr(log, level)("twisted", text=text, **fields)


def bridge_twisted(level: str = "info") -> None:
    """Route Twisted's own warnings and errors into structlog.

    Its info events are chatter our own events already cover, and some come
    per request: a DNS lookup opens and closes a UDP port, four lines each.
    They show at ``log_level = "debug"``.
    """
    wanted = LogLevel.levelWithName("warn" if level == "warning" else level)
    threshold = wanted if wanted < LogLevel.info else LogLevel.warn
    predicate = LogLevelFilterPredicate(defaultLogLevel=threshold)
    observer = FilteringLogObserver(_twisted_observer, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
