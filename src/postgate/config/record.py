"""The ``[record]`` table: where the recorder writes, whether, how big, how private.

Validated here, used by `postgate.record.recorder`; `config.load` imports this
module, so it imports nothing from the config loader, the rule engine or the
recorder (which would start nothing, but is Twisted and process code).
"""

from __future__ import annotations

import os
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
    max_pending_bytes: int = 8 << 20  # requests held in the daemon (pipe full) before drops


_KEYS: Final = ("path", "enabled", "max_bytes", "keep", "redact", "decisions", "max_pending_bytes")
# Linux's limits on a path and on one of its names, in bytes (PATH_MAX, NAME_MAX).
_PATH_MAX: Final = 4095
_NAME_MAX: Final = 255


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
        max_pending_bytes=get.count("max_pending_bytes", base.max_pending_bytes, 1 << 16, 1 << 32),
    )


def _path(value: Any, problems: Problems, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.error("record.path", f"must be a file name, not {value!r}")
        return None
    path = Path(value)
    path = base_dir / path if base_dir is not None and not path.is_absolute() else path
    reason = _unusable(value, path)
    if reason:
        problems.error("record.path", reason)
        return None
    return path


def _unusable(value: str, path: Path) -> str | None:
    """Why the writer could never open ``path``: said at load, not by a writer dying."""
    if "\0" in value:
        return "must not contain a NUL character"
    raw = os.fsencode(path)
    if len(raw) > _PATH_MAX or any(len(name) > _NAME_MAX for name in raw.split(b"/")):
        return f"too long (at most {_PATH_MAX} bytes, {_NAME_MAX} for each name)"
    if value.endswith("/") or path.is_dir():
        return f"{str(path)!r} is a directory, not a file name"
    return None
