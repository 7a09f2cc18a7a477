"""The operations tables: ``[control]`` (status socket), ``[metrics]`` and ``[log]``.

Validated here, used by `postgate.daemon.control`, `postgate.daemon.metrics`
and the decision log (docs/operations.md). `config.load` imports this module,
so the checks it needs from the loader (endpoint syntax, network syntax) are
passed in rather than imported.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from postgate.config.problems import Problems

LOOPBACK: Final = ("127.0.0.0/8", "::1/128")
# What the decision log does with the local part of sender and recipient.
REDACT: Final = ("keep", "hash", "drop")
# What it does with client_address: "network" keeps the /24 (IPv4) or /48 (IPv6).
CLIENT: Final = ("keep", "network", "drop")


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Where ``postgate status`` (and later tools) reach the running daemon."""

    socket: Path | None = None  # None: no control socket
    mode: int = 0o660
    # Besides root and the daemon's own user, who may ask (SO_PEERCRED).
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus listener: off unless ``listen`` names an endpoint."""

    listen: str = ""
    allow: tuple[str, ...] = LOOPBACK


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How much of a request the ``decision`` event keeps."""

    addresses: str = "keep"  # REDACT
    client_address: str = "keep"  # CLIENT
    key: Path | None = None  # the HMAC key for addresses = "hash" (created 0600)

    @property
    def redacts(self) -> bool:
        return self.addresses != "keep" or self.client_address != "keep"


def parse_control(raw: Any, problems: Problems, base_dir: Path) -> ControlSettings:
    if not _table(raw, "control", problems):
        return ControlSettings()
    check_keys(raw, ("socket", "mode", "allow_users", "allow_groups"), "control", problems)
    get = Values(raw, "control", problems)
    socket = _path(raw.get("socket"), "control.socket", problems, base_dir)
    mode = get.choice("mode", "660", ("600", "660", "0600", "0660"))
    return ControlSettings(
        socket=socket,
        mode=int(mode, 8),
        allow_uids=_ids(get, "allow_users", lambda n: pwd.getpwnam(n).pw_uid, "user"),
        allow_gids=_ids(get, "allow_groups", lambda n: grp.getgrnam(n).gr_gid, "group"),
    )


def parse_metrics(
    raw: Any,
    problems: Problems,
    endpoint_problem: Callable[[str], str | None],
    network_problem: Callable[[str], str | None],
) -> MetricsSettings:
    if not _table(raw, "metrics", problems):
        return MetricsSettings()
    check_keys(raw, ("listen", "allow"), "metrics", problems)
    get = Values(raw, "metrics", problems)
    listen = raw.get("listen", "")
    if not isinstance(listen, str):
        problems.error("metrics.listen", f"must be one endpoint string, not {listen!r}")
        listen = ""
    elif listen:
        reason = endpoint_problem(listen)
        if reason:
            problems.error("metrics.listen", reason)
    return MetricsSettings(listen, get.strings("allow", LOOPBACK, network_problem))


def parse_log(raw: Any, problems: Problems, base_dir: Path) -> LogSettings:
    if not _table(raw, "log", problems):
        return LogSettings()
    check_keys(raw, ("addresses", "client_address", "key"), "log", problems)
    get = Values(raw, "log", problems)
    addresses = get.choice("addresses", "keep", REDACT)
    key = _path(raw.get("key"), "log.key", problems, base_dir)
    if addresses == "hash" and key is None:
        problems.error("log.addresses", "hashing needs log.key, a key file (created 0600)")
    return LogSettings(addresses, get.choice("client_address", "keep", CLIENT), key)


def _table(raw: Any, name: str, problems: Problems) -> bool:
    if not isinstance(raw, dict):
        problems.error(name, f"must be a table ([{name}])")
        return False
    return True


def _path(value: Any, place: str, problems: Problems, base_dir: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        problems.error(place, f"must be a file name, not {value!r}")
        return None
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _ids(get: Values, key: str, lookup: Callable[[str], int], what: str) -> frozenset[int]:
    found = set()
    for index, name in enumerate(get.strings(key, (), lambda _: None)):
        try:
            found.add(int(name) if name.isdigit() else lookup(name))
        except KeyError:
            get.problems.error(
                f"{get.where(key)}[{index}]", f"{name!r}: no such {what} on this system"
            )
    return frozenset(found)


__all__ = [
    "ControlSettings",
    "LogSettings",
    "MetricsSettings",
    "parse_control",
    "parse_log",
    "parse_metrics",
]
