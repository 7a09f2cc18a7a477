"""The daemon's embedded state: providers built once, loaded from and written behind to a file.

The providers live as long as the daemon, across reloads: counters are
keyed by rule id, so a reload that changes a limit keeps them. The file
(``[state] directory``/state.sqlite) is shared by every provider with an
``attach(disk, now)`` method (each under its own kind of row), read at start, before the reactor
serves, and written by its own thread (`postgate.state.disk`); a stateless
configuration never opens it. A file that
cannot be opened is logged once and the state is kept in memory only:
mail is never refused for want of a disk.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING

import structlog

from postgate.daemon.control import CommandError
from postgate.daemon.redis import Redis
from postgate.daemon.redis_greylist import RedisGreylist
from postgate.daemon.redis_limits import RedisLimitFacts
from postgate.state import greylist, greylist_report, local_providers
from postgate.state.disk import DiskStore
from postgate.state.greylist_scripts import SCRIPTS as GREY_SCRIPTS
from postgate.state.limit_scripts import SCRIPTS
from postgate.state.report import StateError, handle

if TYPE_CHECKING:
    from typing import Any

    from postgate.config.load import Config
    from postgate.state.greylist import GreylistStore
    from postgate.state.limits import LimitStore

log = structlog.get_logger("postgate")

_WARNINGS = frozenset({"limit_needs_end_of_message"})


def _event(event: str, **fields: object) -> None:
    if event in _WARNINGS:
        log.warning(event, **fields)
    else:
        log.info(event, **fields)


class EmbeddedState:
    """The providers, and the file behind them once a ruleset keeps state."""

    def __init__(self, config: Config) -> None:
        self.disk: DiskStore | None = None
        self.active = False  # a ruleset has read state since the start
        self._running = False
        timeout = config.state.reservation_timeout
        self.providers = local_providers(config, log=_event, reservation_timeout=timeout)
        self.store: LimitStore = self.providers["limit"].store  # type: ignore[attr-defined]
        self.grey: GreylistStore = self.providers[greylist.PREFIX].store  # type: ignore[attr-defined]
        self.redis: Redis | None = None
        self.shared: RedisLimitFacts | None = None
        settings = config.state.redis
        if config.state.backend == "redis" and settings is not None:
            self.redis = Redis(settings, {**SCRIPTS, **GREY_SCRIPTS})
            self.shared = RedisLimitFacts(self.redis, config, timeout, _event)
            self.providers["limit"] = self.shared
            self.providers[greylist.PREFIX] = RedisGreylist(self.redis)
        self.persist(config)

    def persist(self, config: Config) -> None:
        """Open the file and load it, the first time a ruleset reads state.

        A stateless configuration opens nothing; one that gains a limit on
        reload loads the file then, once (logged with its duration).
        """
        if self.disk is not None or not config.ruleset.needs_facts:
            return
        self.active = True
        settings, started = config.state, time.monotonic()
        try:
            disk = DiskStore(
                settings.file,
                on_error=lambda exc: log.error("state_write_failed", error=repr(exc)),
                on_recovered=lambda: log.info("state_write_recovered"),
            )
        except (OSError, sqlite3.Error) as exc:
            log.error("state_not_persisted", file=str(settings.file), error=repr(exc))  # noqa: TRY400 - the disk, not the code
            return
        self.disk = disk
        loaded: dict[str, int] = {}
        for kind, provider in self.providers.items():
            attach = getattr(provider, "attach", None)  # the providers that persist
            if attach is None:
                continue
            try:
                loaded[kind] = attach(disk, time.time())
            except (sqlite3.Error, ValueError) as exc:  # a damaged file: go on with what loaded
                log.error("state_not_loaded", file=str(settings.file), kind=kind, error=repr(exc))  # noqa: TRY400 - the file, not the code
        ms = round((time.monotonic() - started) * 1000, 1)
        log.info("state_loaded", file=str(settings.file), rows=loaded, ms=ms)
        if self._running:
            disk.start()

    def start(self) -> None:
        self._running = True
        if self.redis is not None:
            self.redis.start()
        if self.disk is not None:
            self.disk.start()

    def reconfigure(self, config: Config) -> None:
        """What a reload may change without a restart: the reservation timeout, the file's use."""
        self.store.timeout = config.state.reservation_timeout
        if self.shared is not None:
            self.shared.reconfigure(config, config.state.reservation_timeout)
        if (config.state.backend == "redis") != (self.shared is not None):
            log.warning("setting_needs_restart", setting="state.backend")
        if self.disk is not None and config.state.file != self.disk.path:
            log.warning("setting_needs_restart", setting="state.directory")
        self.persist(config)

    def status(self) -> dict[str, object] | None:
        """The store's part of ``postgate status``: read from memory, no I/O."""
        if self.shared is not None:
            return self.shared.status()
        disk = self.disk
        if not self.active:
            return None  # no rule has kept state: "no state backend"
        return {
            "backend": "embedded",
            "file": None if disk is None else str(disk.path),
            "counters": len(self.store.counters),
            "greylist_entries": len(self.grey.entries) + len(self.grey.clients),
            "in_flight": len(self.store.flights),
            "pending_writes": 0 if disk is None else disk.pending,
            "written": 0 if disk is None else disk.written,
            "write_failing": False if disk is None else disk.failing,
        }

    def command(self, args: dict[str, Any]) -> dict[str, Any]:
        """The control socket's ``state`` command (`postgate.state.report.handle`).

        ``kind = "greylist"`` asks greylisting's records instead
        (`postgate.state.greylist_report.handle`).
        """
        try:
            if args.get("kind") == "greylist":
                after = args.get("allowlist_after", 5)
                after = after if isinstance(after, int) and not isinstance(after, bool) else 5
                return greylist_report.handle(self.grey, args, time.time(), after)
            return handle(self.store, args, time.time())
        except StateError as exc:
            raise CommandError(str(exc)) from None

    def close(self) -> None:
        """Write what is queued (a clean shutdown loses nothing)."""
        if self.redis is not None:
            self.redis.stop()
        if self.disk is not None:
            with contextlib.suppress(sqlite3.Error):  # the last batch failing is logged already
                self.disk.close()


__all__ = ["EmbeddedState"]
