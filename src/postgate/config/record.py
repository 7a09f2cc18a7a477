"""The ``[record]`` table: where the recorder writes, whether, how big, how private.

Validated here, used by `postgate.record.recorder`; config.py imports this module, so
it imports nothing from the config loader or the rule engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.config.problems import Problems


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """The ``[record]`` table: where, whether, how big, how private."""

    path: Path | None = None
    enabled: bool = False
    max_bytes: int = 64 * 1024 * 1024  # rotate past this size; 0 never rotates
    keep: int = 5  # rotated files kept: path.1 (newest) .. path.keep
    redact: bool = False
    decisions: bool = True  # write '# expect:' / '# expect-rule:' lines
    max_pending: int = 10_000  # records held in the daemon (queued, or the pipe full) before drops


_KEYS: Final = ("path", "enabled", "max_bytes", "keep", "redact", "decisions", "max_pending")


def parse_record_settings(
    raw: Mapping[str, Any], problems: Problems, base_dir: Path | None = None
) -> RecordSettings:
    """Validate a ``[record]`` table; a relative path is relative to ``base_dir``."""
    check_keys(raw, _KEYS, "record", problems)
    base = RecordSettings()
    get = Values(raw, "record", problems)
    path = _path(raw.get("path"), problems, base_dir)
    enabled = get.flag("enabled", base.enabled)
    if enabled and path is None:
        problems.error("record.enabled", "recording needs record.path")
    return RecordSettings(
        path=path,
        enabled=enabled,
        max_bytes=get.count("max_bytes", base.max_bytes, 0, 1 << 40),
        keep=get.count("keep", base.keep, 0, 1000),
        redact=get.flag("redact", base.redact),
        decisions=get.flag("decisions", base.decisions),
        max_pending=get.count("max_pending", base.max_pending, 1, 10_000_000),
    )


def _path(value: Any, problems: Problems, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.error("record.path", f"must be a file name, not {value!r}")
        return None
    path = Path(value)
    return base_dir / path if base_dir is not None and not path.is_absolute() else path
