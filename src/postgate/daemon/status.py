"""The ``status`` control command: what the running daemon is doing, as one JSON object.

Read from what the daemon already holds (its configuration, `Stats`, the
recorder); nothing is computed per request for it. ``postgate status``
(`postgate.commands.status`) shows it.

A feature adds its own part under a key of the report::

    daemon.status_parts["state"] = lambda: {"backend": "redis", "up": True}

The function runs on the reactor when the report is asked for, so it reads
what the feature already knows (say, its last health check) and does no I/O.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from postgate import __version__

if TYPE_CHECKING:
    from postgate.daemon.service import Daemon


def iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def status(daemon: Daemon) -> dict[str, Any]:
    config = daemon.answerer.config
    stats = daemon.answerer.stats
    recorder = daemon.recorder
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started": iso(daemon.started),
        "uptime_seconds": round(time.time() - daemon.started, 1),
        "config": str(config.path),
        "digest": config.ruleset.digest,
        "rules": config.ruleset.rule_count,
        "dry_run": config.daemon.dry_run,
        "last_reload": daemon.last_reload,
        "listeners": daemon.endpoints(),
        "connections": {
            "open": len(daemon.factory.connections),
            "max": config.daemon.max_connections,
            "refused": dict(stats.refused),
            "protocol_errors": stats.protocol_errors,
        },
        "requests": {
            "answered": daemon.answerer.answered,
            "errors": daemon.answerer.errors,
            "by_state": {state: n for state, n in stats.requests.items() if n},
        },
        "decisions": _rows(stats.by_class()),
        "observed": _rows(stats.by_class(observed=True)),
        "recording": {
            "enabled": recorder.enabled,
            "path": None if config.record.path is None else str(config.record.path),
            "written": recorder.written,
            "dropped": recorder.dropped,
        },
        # None until a feature that keeps state (rate limits, greylisting)
        # puts its store's health here through `Daemon.status_parts`.
        "state": None,
    } | {name: part() for name, part in daemon.status_parts.items()}


def _rows(counts: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    rows = [{"rule": rule, "class": cls, "count": n} for (rule, cls), n in counts.items() if n]
    return sorted(rows, key=lambda row: (-row["count"], row["rule"]))


__all__ = ["iso", "status"]
