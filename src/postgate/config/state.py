"""The ``[state] table``: where the embedded state is kept, and for how long messages reserve.

Validated here, used by the daemon (`postgate.daemon.service`) and
``postgate state``. The directory defaults to systemd's ``$STATE_DIRECTORY``
(``StateDirectory=postgate``: /var/lib/postgate) and, outside systemd, to
``state/`` beside the config file, so ``make run`` needs nothing set up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from postgate.config.redis import RedisSettings, parse_redis_settings
from postgate.config.values import Values, check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.config.problems import Problems

FILE_NAME: Final = "state.sqlite"
BACKENDS: Final = ("embedded", "redis")


@dataclass(frozen=True, slots=True)
class StateSettings:
    directory: Path = Path("state")
    backend: str = "embedded"
    # A message that reserved at RCPT and was neither charged at
    # END-OF-MESSAGE nor followed by another transaction of its session
    # stops reserving after this many seconds (Postfix's smtpd_timeout is
    # 300 s per command; a large upload takes several).
    reservation_timeout: float = 900.0
    # backend = "redis": where; docs/operations.md, Redis.
    redis: RedisSettings | None = None

    @property
    def file(self) -> Path:
        return self.directory / FILE_NAME


# ``[state.redis]`` is read by `postgate.config.redis`.
_KEYS: Final = ("directory", "backend", "reservation_timeout", "redis")


def default_directory(base_dir: Path) -> Path:
    found = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(found) if found else base_dir / "state"


def parse_state_settings(
    raw: Mapping[str, Any], problems: Problems, base_dir: Path
) -> StateSettings:
    """Validate a ``[state]`` table; a relative directory is relative to ``base_dir``."""
    check_keys(raw, _KEYS, "state", problems)
    base = StateSettings()
    get = Values(raw, "state", problems)
    directory = default_directory(base_dir)
    given = raw.get("directory")
    if isinstance(given, str) and given:
        directory = base_dir / Path(given).expanduser()
    elif given is not None:
        problems.error("state.directory", f"must be a directory path, not {given!r}")
    backend = get.choice("backend", base.backend, BACKENDS)
    raw_redis = raw.get("redis", {})
    redis = None
    if not isinstance(raw_redis, dict):
        problems.error("state.redis", "must be a table ([state.redis])")
    elif backend == "redis" or raw_redis:
        redis = parse_redis_settings(raw_redis, problems, base_dir)
    return StateSettings(
        directory=directory,
        backend=backend,
        reservation_timeout=get.number("reservation_timeout", base.reservation_timeout, 10, 86400),
        redis=redis,
    )


__all__ = ["FILE_NAME", "StateSettings", "default_directory", "parse_state_settings"]
