"""Load and validate a configuration file into frozen objects.

Owns the ``[daemon]`` table and the top-level shape; the ``[lists]`` and
``[[rules]]`` parts are compiled by `postgate.rules`. Every problem is
collected as ``FILE: place: reason`` and the whole set is raised at once, so
``postgate check`` shows all mistakes in one run. A `Config` is built
completely before anyone sees it, which is what makes reload a swap of one
reference.
"""

from __future__ import annotations

import grp
import pwd
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from postgate.config.ops import (
    ControlSettings,
    LogSettings,
    MetricsSettings,
    parse_control,
    parse_log,
    parse_metrics,
)
from postgate.config.places import locate
from postgate.config.problems import ConfigError, Problem, Problems
from postgate.config.record import RecordSettings, parse_record_settings
from postgate.config.state import StateSettings, parse_state_settings
from postgate.config.values import Values, check_keys, suggest
from postgate.replies import planned
from postgate.replies.model import DUNNO, Action
from postgate.rules import Ruleset, compile_ruleset
from postgate.rules.lists import read_regular
from postgate.rules.networks import NetworkSet, parse_network
from postgate.wire.codec import Limits

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

DEFAULT_PATH: Final = Path("/etc/postgate/postgate.toml")
DEFAULT_LISTEN: Final = ("tcp:10040:interface=127.0.0.1",)
LOOPBACK: Final = ("127.0.0.0/8", "::1/128")
ENDPOINT_TYPES: Final = ("tcp", "tcp6", "unix", "systemd")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("auto", "json", "console")
TOP_LEVEL: Final = ("daemon", "lists", "rules", "record", "control", "metrics", "log", "state")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How the daemon listens, bounds its inputs and reports."""

    listen: tuple[str, ...] = DEFAULT_LISTEN
    allow: NetworkSet = field(default_factory=lambda: _network_set(LOOPBACK))
    limits: Limits = Limits()  # noqa: RUF009 - frozen, so one shared default is safe
    # Seconds a started request may stay incomplete before the peer is cut
    # off; a connection idle after a request is never closed (docs/protocol.md,
    # Connections), one that never asked is (first_request_timeout).
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
    control: ControlSettings = ControlSettings()  # noqa: RUF009 - frozen, shared default is safe
    metrics: MetricsSettings = MetricsSettings()  # noqa: RUF009 - frozen, shared default is safe
    log: LogSettings = LogSettings()  # noqa: RUF009 - frozen, shared default is safe
    state: StateSettings = StateSettings()  # noqa: RUF009 - frozen, shared default is safe


def load_config(path: Path) -> Config:
    """Read, validate and compile ``path``; raise `ConfigError` on any error."""
    problems = Problems(str(path))
    text = _read_text(path, problems)
    doc = _parse_toml(text, problems) if text is not None else {}
    problems.raise_if_any()
    for key in [k for k in doc if k.lower() in planned.KEYS]:
        problems.error(key, planned.KEYS[key.lower()])
    check_keys(
        {k: v for k, v in doc.items() if k.lower() not in planned.KEYS}, TOP_LEVEL, "", problems
    )
    daemon = _daemon(doc.get("daemon", {}), problems)
    record = _record(doc.get("record", {}), path.parent, problems)
    ops = (
        parse_control(doc.get("control", {}), problems, path.parent),
        parse_metrics(doc.get("metrics", {}), problems, endpoint_problem, _network_problem),
        parse_log(doc.get("log", {}), problems, path.parent),
    )
    state = _state(doc.get("state", {}), path.parent, problems)
    ruleset = compile_ruleset(doc, path.parent, problems)
    locate(problems.errors, doc, text or "", str(path))
    locate(problems.warnings, doc, text or "", str(path))
    problems.raise_if_any()
    return Config(path, daemon, ruleset, tuple(problems.warnings), record, *ops, state=state)


def _state(raw: Any, base_dir: Path, p: Problems) -> StateSettings:
    if not isinstance(raw, dict):
        p.error("state", "must be a table ([state])")
        return StateSettings()
    return parse_state_settings(raw, p, base_dir)


def _record(raw: Any, base_dir: Path, p: Problems) -> RecordSettings:
    if not isinstance(raw, dict):
        p.error("record", "must be a table ([record])")
        return RecordSettings()
    return parse_record_settings(raw, p, base_dir)


def _read_text(path: Path, problems: Problems) -> str | None:
    """The file as text; kept beside the parsed table to find lines for problems."""
    try:
        return read_regular(path).decode("utf-8")
    except OSError as exc:
        problems.error("", f"cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        problems.error("", f"not valid UTF-8: {exc}")
    return None


def _parse_toml(text: str, problems: Problems) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.error("", f"not valid TOML: {exc}")
    except RecursionError:
        problems.error("", "not a configuration: nested too deeply")
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
        listen=get.strings("listen", base.listen, endpoint_problem),
        allow=_allow(get.strings("allow", LOOPBACK, _network_problem), p),
        limits=limits,
        request_timeout=get.number("request_timeout", base.request_timeout, 0.1, 3600),
        deadline=get.number("deadline", base.deadline, 0.01, 60),
        first_request_timeout=get.number(
            "first_request_timeout", base.first_request_timeout, 0.1, 3600
        ),
        allow_uids=_ids(get, "allow_users", _uid, "user"),
        allow_gids=_ids(get, "allow_groups", _gid, "group"),
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


def _allow(items: tuple[str, ...], p: Problems) -> NetworkSet:
    """The allow list, warning as a list entry does when an entry's host bits widen it."""
    networks = []
    for index, item in enumerate(items):
        network, problem = parse_network(item)
        if network is not None:
            networks.append(network)
            if problem:
                p.warn(f"daemon.allow[{index}]", problem)
    return NetworkSet.build(networks)


def _network_problem(item: str) -> str | None:
    network, problem = parse_network(item)
    return problem if network is None else None


def _uid(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def _ids(get: Values, key: str, lookup: Callable[[str], int], what: str) -> frozenset[int]:
    """User or group names (or numbers) as ids, each looked up once; unknown ones refused."""
    found = set()
    for index, name in enumerate(get.strings(key, (), lambda _: None)):
        try:
            found.add(lookup(name))
        except KeyError:
            get.problems.error(
                f"{get.where(key)}[{index}]", f"{name!r}: no such {what} on this system"
            )
    return frozenset(found)


def endpoint_problem(item: str) -> str | None:
    """What is wrong with one ``listen`` endpoint; the same for the config and ``--listen``.

    Twisted's endpoint syntax (``tcp:PORT:interface=ADDR``, ``unix:PATH:mode=660``,
    ``systemd:domain=INET:name=NAME``) is checked here, so ``postgate check``
    catches what would otherwise stop the daemon at start.
    """
    kind, colon, rest = item.partition(":")
    if kind not in ENDPOINT_TYPES:
        return f"{item!r}: endpoint type {kind!r} is not one of {', '.join(ENDPOINT_TYPES)}" + (
            _endpoint_hint(item)
        )
    if not colon or not rest:
        need = "a socket path" if kind == "unix" else "arguments"
        return f"{item!r}: an endpoint needs {need}, e.g. {_EXAMPLES[kind]}"
    positional, named = _endpoint_args(rest)
    spec = _ENDPOINT_ARGS[kind]
    for key in named:
        if key not in spec:
            return (
                f"{item!r}: {kind} takes {', '.join(spec)}, not {key!r}{suggest(key, spec)}; "
                f"e.g. {_EXAMPLES[kind]}"
            )
    if len(positional) > len(_POSITIONAL[kind]):
        return f"{item!r}: too many ':'-separated parts; e.g. {_EXAMPLES[kind]}"
    values = endpoint_values(kind, rest)
    for key, value in values.items():
        reason = spec[key](value)
        if reason:
            return f"{item!r}: {key} {value!r} {reason}; e.g. {_EXAMPLES[kind]}"
    return _endpoint_required(item, kind, values)


def _endpoint_required(item: str, kind: str, values: dict[str, str]) -> str | None:
    if kind == "systemd" and ("index" in values) == ("name" in values):
        return f"{item!r}: systemd needs index=N or name=NAME (one of them), e.g. {_EXAMPLES[kind]}"
    if kind == "systemd" and "domain" not in values:
        return f"{item!r}: systemd needs domain=INET, INET6 or UNIX, e.g. {_EXAMPLES[kind]}"
    required = _POSITIONAL[kind][:1]
    if required and required[0] not in values:
        return f"{item!r}: {kind} needs a {required[0]}, e.g. {_EXAMPLES[kind]}"
    return None


def endpoint_values(kind: str, rest: str) -> dict[str, str]:
    """An endpoint's arguments by name, positional ones named as Twisted names them."""
    positional, named = _endpoint_args(rest)
    return dict(zip(_POSITIONAL.get(kind, ()), positional, strict=False)) | named


def _endpoint_args(rest: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's split: ':' separates arguments unless escaped as '\\:'."""
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", rest)]
    positional = [p for p in parts if "=" not in p]
    named = dict(p.split("=", 1) for p in parts if "=" in p)
    return positional, named


def _endpoint_hint(item: str) -> str:
    """The endpoint an admin most likely meant by ``HOST:PORT``, a bare port or a path."""
    host, _, port = item.rpartition(":")
    if item.isdigit():
        return f"; for a port write tcp:{item}:interface=127.0.0.1"
    if port.isdigit() and host.startswith("[") and host.endswith("]"):
        escaped = host[1:-1].replace(":", "\\:")
        return f"; for an address and port write tcp6:{port}:interface={escaped}"
    if port.isdigit() and host:
        return f"; for an address and port write tcp:{port}:interface={host}"
    if item.startswith("/"):
        return f"; for a UNIX socket write unix:{item}:mode=660"
    return ""


def _port(value: str) -> str | None:
    ok = value.isdigit() and int(value) <= 65535
    return None if ok else "is not a port number (0-65535)"


def _whole(value: str) -> str | None:
    return None if value.isdigit() and int(value) > 0 else "is not a positive whole number"


def _octal(value: str) -> str | None:
    return None if re.fullmatch(r"[0-7]{3,4}", value) else "is not an octal file mode like 660"


def _text(value: str) -> str | None:
    return None if value else "is empty"


def _choice(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"is not one of {', '.join(choices)}"

    return check


_TCP: Final[Mapping[str, Callable[[str], str | None]]] = {
    "port": _port,
    "interface": _text,
    "backlog": _whole,
}
_ENDPOINT_ARGS: Final[Mapping[str, Mapping[str, Callable[[str], str | None]]]] = {
    "tcp": _TCP,
    "tcp6": _TCP,
    "unix": {
        "address": _text,
        "mode": _octal,
        "backlog": _whole,
        "lockfile": _choice("0", "1"),
        "wantPID": _choice("0", "1"),
    },
    "systemd": {
        "domain": _choice("INET", "INET6", "UNIX"),
        "index": lambda v: None if v.isdigit() else "is not a whole number",
        "name": _text,
    },
}
_POSITIONAL: Final[Mapping[str, tuple[str, ...]]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "systemd": (),
}
_EXAMPLES: Final = {
    "tcp": "tcp:10040:interface=127.0.0.1",
    "tcp6": "tcp6:10040:interface=\\:\\:1",
    "unix": "unix:/run/postgate/policy.sock:mode=660",
    "systemd": "systemd:domain=INET:name=postgate-tcp",
}


__all__ = [
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "endpoint_problem",
    "load_config",
]
