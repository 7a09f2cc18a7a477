"""The ``[state.redis]`` table: where the shared state of several MX hosts lives.

Read when ``[state] backend = "redis"``. The password can come from a file
(``password_file``), so the config itself can stay world-readable; timeouts
are bounded so that a slow Redis can never hold an answer past
``daemon.deadline`` (the fact gatherer cuts it off anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.config.problems import Problems

PLACE: Final = "state.redis"
_KEYS: Final = (
    "host",
    "port",
    "socket",
    "password",
    "password_file",
    "username",
    "database",
    "connect_timeout",
    "reply_timeout",
    "prefix",
)
_SECRET_MAX: Final = 4096


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How to reach Redis; ``socket`` (a UNIX path) wins over host and port."""

    host: str = "127.0.0.1"
    port: int = 6379
    socket: Path | None = None
    password: str | None = None
    username: str | None = None
    database: int = 0
    connect_timeout: float = 1.0
    reply_timeout: float = 0.5
    prefix: str = "postgate:"  # every key postgate writes starts with this

    @property
    def address(self) -> str:
        """Where, for logs and ``postgate status`` (never the password)."""
        return f"unix:{self.socket}" if self.socket else f"{self.host}:{self.port}"


def parse_redis_settings(
    raw: Mapping[str, Any], problems: Problems, base_dir: Path | None = None
) -> RedisSettings:
    """Validate a ``[state.redis]`` table; relative paths are relative to ``base_dir``."""
    check_keys(raw, _KEYS, PLACE, problems)
    base = RedisSettings()
    get = Values(raw, PLACE, problems)
    host = raw.get("host", base.host)
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        problems.error(f"{PLACE}.host", f"{host!r}: give a host name or address")
        host = base.host
    return RedisSettings(
        host=host,
        port=get.count("port", base.port, 1, 65535),
        socket=_path(raw.get("socket"), f"{PLACE}.socket", problems, base_dir),
        password=_password(raw, problems, base_dir),
        username=_text(raw.get("username"), f"{PLACE}.username", problems),
        database=get.count("database", base.database, 0, 1 << 16),
        connect_timeout=get.number("connect_timeout", base.connect_timeout, 0.01, 30.0),
        reply_timeout=get.number("reply_timeout", base.reply_timeout, 0.01, 30.0),
        prefix=_text(raw.get("prefix", base.prefix), f"{PLACE}.prefix", problems) or base.prefix,
    )


def _text(value: Any, place: str, problems: Problems) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isprintable() or len(value) > _SECRET_MAX:
        problems.error(place, "must be printable text")
        return None
    return value


def _path(value: Any, place: str, problems: Problems, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        problems.error(place, f"{value!r}: give a path")
        return None
    path = Path(value)
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _password(raw: Mapping[str, Any], problems: Problems, base_dir: Path | None) -> str | None:
    if "password" in raw and "password_file" in raw:
        problems.error(PLACE, "give either password or password_file, not both")
        return None
    if "password" in raw:
        return _text(raw["password"], f"{PLACE}.password", problems)
    path = _path(raw.get("password_file"), f"{PLACE}.password_file", problems, base_dir)
    if path is None:
        return None
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"{path}: cannot be read ({exc.__class__.__name__})"
        problems.error(f"{PLACE}.password_file", reason)
        return None
    return _text(secret, f"{PLACE}.password_file", problems)


__all__ = ["RedisSettings", "parse_redis_settings"]
