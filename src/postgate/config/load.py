"""Load and validate a configuration file into frozen objects.

Owns the ``[daemon]`` table and the top-level shape; the ``[lists]`` and
``[[rules]]`` parts are compiled by `postgate.rules`. Every problem is
collected as ``FILE: place: reason`` and the whole set is raised at once, so
``postgate check`` shows all mistakes in one run. A `Config` is built
completely before anyone sees it, which is what makes reload a swap of one
reference (style.md §2.2).
"""

from __future__ import annotations

import contextlib
import grp
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from postgate.config.problems import ConfigError, Problem, Problems
from postgate.config.record import RecordSettings, parse_record_settings
from postgate.config.values import Values, check_keys
from postgate.replies.model import DUNNO, Action
from postgate.rules import Ruleset, compile_ruleset
from postgate.rules.networks import NetworkSet, parse_network
from postgate.wire.codec import Limits

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_PATH: Final = Path("/etc/postgate/postgate.toml")
DEFAULT_LISTEN: Final = ("tcp:10040:interface=127.0.0.1",)
LOOPBACK: Final = ("127.0.0.0/8", "::1/128")
ENDPOINT_TYPES: Final = ("tcp", "tcp6", "unix", "systemd")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("auto", "json", "console")
TOP_LEVEL: Final = ("daemon", "lists", "rules", "record")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How the daemon listens, bounds its inputs and reports."""

    listen: tuple[str, ...] = DEFAULT_LISTEN
    allow: NetworkSet = field(default_factory=lambda: _network_set(LOOPBACK))
    limits: Limits = Limits()  # noqa: RUF009 - frozen, so one shared default is safe
    # Seconds a started request may stay incomplete before the peer is cut
    # off; idle connections (no partial request) are never closed (§1).
    request_timeout: float = 30.0
    # Seconds an answer may wait for facts that need I/O (state, DNS) before
    # each missing one takes its configured outcome; far below Postfix's
    # smtpd_policy_service_timeout (100 s), so mail never waits on a dependency.
    deadline: float = 1.0
    # Postfix writes its request as soon as it connects; a connection that
    # has sent nothing by then only holds a slot that Postfix may need.
    first_request_timeout: float = 5.0
    # UNIX-socket peers allowed by their credentials (SO_PEERCRED): user and
    # primary group ids. Both empty: any local process the socket's mode lets in.
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    max_connections: int = 1024
    on_error: Action = DUNNO
    dry_run: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    shutdown_timeout: float = 4.0


@dataclass(frozen=True, slots=True)
class Config:
    """A complete, validated configuration, ready to serve."""

    path: Path
    daemon: DaemonConfig
    ruleset: Ruleset
    warnings: tuple[Problem, ...] = ()
    record: RecordSettings = RecordSettings()  # noqa: RUF009 - frozen, shared default is safe


def load_config(path: Path) -> Config:
    """Read, validate and compile ``path``; raise `ConfigError` on any error."""
    problems = Problems(str(path))
    doc = _read_toml(path, problems)
    problems.raise_if_any()
    check_keys(doc, TOP_LEVEL, "", problems)
    daemon = _daemon(doc.get("daemon", {}), problems)
    record = _record(doc.get("record", {}), path.parent, problems)
    ruleset = compile_ruleset(doc, path.parent, problems)
    problems.raise_if_any()
    return Config(path, daemon, ruleset, tuple(problems.warnings), record)


def _record(raw: Any, base_dir: Path, p: Problems) -> RecordSettings:
    if not isinstance(raw, dict):
        p.error("record", "must be a table ([record])")
        return RecordSettings()
    return parse_record_settings(raw, p, base_dir)


def _read_toml(path: Path, problems: Problems) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        problems.error("", f"cannot read: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        problems.error("", f"not valid TOML: {exc}")
    except UnicodeDecodeError as exc:
        problems.error("", f"not valid UTF-8: {exc}")
    return {}


_DAEMON_KEYS: Final = (
    "listen",
    "allow",
    "max_line_bytes",
    "max_request_bytes",
    "max_attributes",
    "request_timeout",
    "deadline",
    "first_request_timeout",
    "allow_users",
    "allow_groups",
    "max_connections",
    "on_error",
    "dry_run",
    "log_level",
    "log_format",
    "shutdown_timeout",
)


def _daemon(raw: Any, p: Problems) -> DaemonConfig:
    if not isinstance(raw, dict):
        p.error("daemon", "must be a table ([daemon])")
        return DaemonConfig()
    check_keys(raw, _DAEMON_KEYS, "daemon", p)
    base = DaemonConfig()
    get = Values(raw, "daemon", p)
    limits = _limits(get, base.limits)
    return DaemonConfig(
        listen=get.strings("listen", base.listen, _endpoint_problem),
        allow=_network_set(get.strings("allow", LOOPBACK, _network_problem)),
        limits=limits,
        request_timeout=get.number("request_timeout", base.request_timeout, 0.1, 3600),
        deadline=get.number("deadline", base.deadline, 0.01, 60),
        first_request_timeout=get.number(
            "first_request_timeout", base.first_request_timeout, 0.1, 3600
        ),
        allow_uids=_ids(get.strings("allow_users", (), _user_problem), _uid),
        allow_gids=_ids(get.strings("allow_groups", (), _group_problem), _gid),
        max_connections=int(get.number("max_connections", base.max_connections, 1, 1_000_000)),
        on_error=get.action("on_error", base.on_error),
        dry_run=get.flag("dry_run", base.dry_run),
        log_level=get.choice("log_level", base.log_level, LOG_LEVELS),
        log_format=get.choice("log_format", base.log_format, LOG_FORMATS),
        # Bounded well below the unit's TimeoutStopSec (30 s), which must also
        # cover the recorder's last flush.
        shutdown_timeout=get.number("shutdown_timeout", base.shutdown_timeout, 0.1, 15),
    )


def _limits(get: Values, base: Limits) -> Limits:
    line = int(get.number("max_line_bytes", base.max_line, 512, 1 << 20))
    request = int(get.number("max_request_bytes", base.max_request, 1024, 16 << 20))
    attrs = int(get.number("max_attributes", base.max_attributes, 8, 10_000))
    if line > request:
        get.problems.error("daemon.max_line_bytes", "must not exceed max_request_bytes")
        return base
    return Limits(line, request, attrs)


def _network_set(items: tuple[str, ...]) -> NetworkSet:
    networks = [parse_network(item)[0] for item in items]
    return NetworkSet.build([net for net in networks if net is not None])


def _network_problem(item: str) -> str | None:
    network, problem = parse_network(item)
    return problem if network is None else None


def _uid(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def _ids(names: tuple[str, ...], lookup: Callable[[str], int]) -> frozenset[int]:
    found = set()
    for name in names:
        with contextlib.suppress(KeyError):  # reported by the problem check
            found.add(lookup(name))
    return frozenset(found)


def _user_problem(name: str) -> str | None:
    try:
        _uid(name)
    except KeyError:
        return f"{name!r}: no such user on this system"
    return None


def _group_problem(name: str) -> str | None:
    try:
        _gid(name)
    except KeyError:
        return f"{name!r}: no such group on this system"
    return None


def _endpoint_problem(item: str) -> str | None:
    kind = item.split(":", 1)[0]
    if kind not in ENDPOINT_TYPES:
        return f"{item!r}: endpoint type {kind!r} is not one of {', '.join(ENDPOINT_TYPES)}"
    if ":" not in item:
        return f"{item!r}: an endpoint needs arguments, e.g. tcp:10040:interface=127.0.0.1"
    return None


__all__ = ["DEFAULT_PATH", "Config", "ConfigError", "DaemonConfig", "load_config"]
