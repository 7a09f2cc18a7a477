"""The daemon's embedded state: providers built once, loaded from and written behind to a file.

The providers live as long as the daemon, across reloads: counters are
keyed by rule id, so a reload that changes a limit keeps them. The file
(``[state] directory``/state.sqlite) is read at start, before the reactor
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

from postgate.state import greylist, local_providers
from postgate.state.disk import DiskStore

if TYPE_CHECKING:
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
        self._running = False
        timeout = config.state.reservation_timeout
        self.providers = local_providers(config, log=_event, reservation_timeout=timeout)
        self.store: LimitStore = self.providers["limit"].store  # type: ignore[attr-defined]
        self.grey: GreylistStore = self.providers[greylist.PREFIX].store  # type: ignore[attr-defined]
        self.persist(config)

    def persist(self, config: Config) -> None:
        """Open the file and load it, the first time a ruleset reads state.

        A stateless configuration opens nothing; one that gains a limit on
        reload loads the file then, once (logged with its duration).
        """
        if self.disk is not None or not config.ruleset.needs_facts:
            return
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
        self.store.disk = self.disk = disk
        self.grey.disk = disk
        try:
            self.store.load(time.time())
            self.grey.load(time.time())
        except (sqlite3.Error, ValueError) as exc:  # a damaged file: go on with what loaded
            log.error("state_not_loaded", file=str(settings.file), error=repr(exc))  # noqa: TRY400 - the file, not the code
        ms = round((time.monotonic() - started) * 1000, 1)
        log.info(
            "state_loaded",
            file=str(settings.file),
            counters=len(self.store.counters),
            greylist=len(self.grey.entries) + len(self.grey.clients),
            ms=ms,
        )
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

    def close(self) -> None:
        """Write what is queued (a clean shutdown loses nothing)."""
        if self.disk is not None:
            with contextlib.suppress(sqlite3.Error):  # the last batch failing is logged already
                self.disk.close()


__all__ = ["EmbeddedState"]
