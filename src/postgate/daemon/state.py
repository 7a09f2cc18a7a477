"""The daemon's embedded state: providers built once, loaded from and written behind to a file.

The providers live as long as the daemon, across reloads: counters are
keyed by rule id, so a reload that changes a limit keeps them. The file
(``[state] directory``/state.sqlite) is read at start, before the reactor
serves, and written by its own thread (`postgate.state.disk`). A file that
cannot be opened is logged once and the state is kept in memory only:
mail is never refused for want of a disk.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import structlog

from postgate.state import local_providers
from postgate.state.disk import DiskStore

if TYPE_CHECKING:
    from postgate.answer import FactProvider
    from postgate.config.load import Config

log = structlog.get_logger("postgate")

_WARNINGS = frozenset({"limit_needs_end_of_message"})


def _event(event: str, **fields: object) -> None:
    if event in _WARNINGS:
        log.warning(event, **fields)
    else:
        log.info(event, **fields)


class EmbeddedState:
    """The providers and the file behind them."""

    def __init__(self, config: Config) -> None:
        settings = config.state
        self.disk: DiskStore | None = None
        started = time.monotonic()
        failed: Exception | None = None
        try:
            self.disk = DiskStore(
                settings.file,
                on_error=lambda exc: log.error("state_write_failed", error=repr(exc)),
                on_recovered=lambda: log.info("state_write_recovered"),
            )
        except (OSError, sqlite3.Error) as exc:
            failed = exc
        if failed is not None:
            log.error("state_not_persisted", file=str(settings.file), error=repr(failed))
        self.providers = self._providers(config)
        self.load_ms = round((time.monotonic() - started) * 1000, 1)

    def _providers(self, config: Config) -> dict[str, FactProvider]:
        timeout = config.state.reservation_timeout
        try:
            return local_providers(
                config, disk=self.disk, log=_event, reservation_timeout=timeout, now=time.time()
            )
        except (sqlite3.Error, ValueError) as exc:  # a damaged file: start empty, say so
            log.error("state_not_loaded", file=str(config.state.file), error=repr(exc))  # noqa: TRY400 - no traceback: the file, not the code, is broken
        return local_providers(config, disk=self.disk, log=_event, reservation_timeout=timeout)

    def start(self) -> None:
        if self.disk is not None:
            self.disk.start()

    def reconfigure(self, config: Config) -> None:
        """What a reload may change without a restart: the reservation timeout."""
        limits = self.providers.get("limit")
        store = getattr(limits, "store", None)
        if store is not None:
            store.timeout = config.state.reservation_timeout
        if self.disk is not None and config.state.file != self.disk.path:
            log.warning("setting_needs_restart", setting="state.directory")

    def close(self) -> None:
        """Write what is queued (a clean shutdown loses nothing)."""
        if self.disk is not None:
            self.disk.close()


__all__ = ["EmbeddedState"]
