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
from postgate.state import local_providers
from postgate.state.disk import DiskStore
from postgate.state.report import StateError, handle

if TYPE_CHECKING:
    from typing import Any

    from postgate.config.load import Config
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
        if self.disk is not None:
            self.disk.start()

    def reconfigure(self, config: Config) -> None:
        """What a reload may change without a restart: the reservation timeout, the file's use."""
        self.store.timeout = config.state.reservation_timeout
        if self.disk is not None and config.state.file != self.disk.path:
            log.warning("setting_needs_restart", setting="state.directory")
        self.persist(config)

    def status(self) -> dict[str, object] | None:
        """The store's part of ``postgate status``: read from memory, no I/O."""
        disk = self.disk
        if not self.active:
            return None  # no rule has kept state: "no state backend"
        return {
            "backend": "embedded",
            "file": None if disk is None else str(disk.path),
            "counters": len(self.store.counters),
            "in_flight": len(self.store.flights),
            "pending_writes": 0 if disk is None else disk.pending,
            "written": 0 if disk is None else disk.written,
            "write_failing": False if disk is None else disk.failing,
        }

    def command(self, args: dict[str, Any]) -> dict[str, Any]:
        """The control socket's ``state`` command (`postgate.state.report.handle`)."""
        try:
            return handle(self.store, args, time.time())
        except StateError as exc:
            raise CommandError(str(exc)) from None

    def close(self) -> None:
        """Write what is queued (a clean shutdown loses nothing)."""
        if self.disk is not None:
            with contextlib.suppress(sqlite3.Error):  # the last batch failing is logged already
                self.disk.close()


__all__ = ["EmbeddedState"]
