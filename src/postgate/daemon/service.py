"""Compose the daemon: listeners, reload, watchdog, orderly shutdown.

The reactor is a parameter so tests can pass their own; only `postgate.commands.cli`
touches the global one. Listeners are built like `strports.service` (see
`postgate.daemon.systemd.listen_service`), which raises a bind failure at start
instead of logging it while the daemon runs deaf.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from typing import TYPE_CHECKING, Protocol

import structlog
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from postgate.config.load import load_config
from postgate.config.problems import ConfigError
from postgate.daemon import control
from postgate.daemon.dns import DnsProvider
from postgate.daemon.facts import Gatherer
from postgate.daemon.logs import THROTTLE, decision_log
from postgate.daemon.metrics import Metrics
from postgate.daemon.server import Answerer, PolicyFactory
from postgate.daemon.state import EmbeddedState
from postgate.daemon.state_metrics import DnsCollector, StateCollector
from postgate.daemon.status import iso, status
from postgate.daemon.systemd import listen_service
from postgate.record.blocks import KeyFileError, key_path, load_key
from postgate.record.recorder import Recorder
from postgate.rules.dnsbl import PREFIX as DNS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from twisted.internet.interfaces import (
        IReactorCore,
        IReactorFromThreads,
        IReactorProcess,
        IReactorSocket,
        IReactorTime,
    )

    class _Reactor(
        IReactorCore, IReactorTime, IReactorSocket, IReactorFromThreads, IReactorProcess
    ):
        """What the daemon needs of a reactor: lifecycle, timers, sockets, threads, a child."""

    from postgate.config.load import Config

log = structlog.get_logger("postgate")

STATUS_EVERY = 10.0
# Read once at start; a reload that changes them says so instead.
_RESTART_ONLY = ("listen", "log_level", "log_format")
# Read once at start too: [control] and [metrics], whose sockets are bound then.
_RESTART_ONLY_TABLES = ("control", "metrics")
GC_YOUNG_THRESHOLD = 5000
# Loading even 100,000-entry lists takes about a second; one that takes this
# long is stuck, and the old configuration goes on serving.
RELOAD_TIMEOUT = 30.0
# The kernel caps a listen queue at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG_MAX = 4096


def _settle_heap() -> None:
    """Keep the cyclic collector off the long-lived objects of a configuration.

    Compiled rules and lists (up to hundreds of thousands of entries) live
    until the next reload; `gc.freeze` moves them out of the collector's
    generations so that collections triggered by per-request garbage do not
    walk them again and again. Frozen objects are still freed by reference
    counting when a reload drops them. The first generation's threshold is
    raised so that the few container objects each request creates trigger a
    collection less often. After a reload the old configuration's objects
    are unfrozen first, so that any cycles among them can still be collected
    (one full collection per reload: milliseconds, once).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def in_daemon_thread(
    reactor: IReactorFromThreads, work: Callable[[Path], Config], path: Path
) -> tuple[Deferred[Config], threading.Thread]:
    """``work(path)`` in a thread of its own that never holds up the exit.

    A reload can hang in a read (a hung NFS mount); in the reactor's thread
    pool it would be joined at shutdown and SIGTERM would wait for ever.
    A result that comes after the Deferred timed out is dropped.
    """
    done: Deferred[Config] = Deferred()

    def settle(outcome: Config | Failure) -> None:
        if not done.called:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

    def run() -> None:
        try:
            outcome: Config | Failure = work(path)
        except BaseException:  # noqa: BLE001 - handed to the reactor, which decides
            outcome = Failure()  # type: ignore[no-untyped-call]
        reactor.callFromThread(settle, outcome)

    thread = threading.Thread(target=run, name="postgate-reload", daemon=True)
    thread.start()
    return done, thread


def load_for_reload(path: Path) -> Config:
    """`load_config`, plus what a swap on the reactor must not do itself: create the key.

    Redaction's key is created (written and fsynced) on first use; done here,
    in the reload's thread, the swap only reads it.
    """
    config = load_config(path)
    if config.record.path is not None and config.record.redact:
        with contextlib.suppress(OSError, KeyFileError):  # reported when the swap loads it
            load_key(key_path(config.record.path))
    if config.log.addresses == "hash" and config.log.key is not None:
        with contextlib.suppress(OSError, KeyFileError):  # the same for [log]'s key
            load_key(config.log.key)
    return config


class Notify(Protocol):
    """What the daemon tells its supervisor; `postgate.daemon.systemd.Notifier` fits."""

    def ready(self, status: str) -> None: ...
    def reloading(self) -> None: ...
    def status(self, text: str) -> None: ...
    def stopping(self) -> None: ...
    def watchdog_interval(self) -> float | None: ...
    def ping(self) -> None: ...


class Daemon:
    """One running postgate: its listeners and its current configuration."""

    def __init__(
        self,
        config: Config,
        reactor: _Reactor,
        notify: Notify,
        listen: tuple[str, ...] = (),
    ) -> None:
        self.recorder = Recorder(config.record, reactor)
        self.dns = DnsProvider(config.dns, reactor)  # lookups, cache hits, ...: self.dns.lookups
        self.decisions = decision_log(lambda flush: reactor.callLater(0, flush))
        self.state = EmbeddedState(config)
        self.answerer = Answerer(
            config,
            structlog.get_logger("postgate").bind(),
            self.recorder,
            decisions=self.decisions,
            # State and DNS providers register here, under their fact prefix.
            facts=Gatherer({**self.state.providers, DNS: self.dns}, reactor),
            counting=config.control.socket is not None or bool(config.metrics.listen),
        )
        self.reactor = reactor
        self._started_with = config
        self.notify = notify
        self.factory = PolicyFactory(self.answerer, reactor)
        self.listen = listen or config.daemon.listen
        self.services = MultiService()
        self.listeners = MultiService()
        self.listeners.setServiceParent(self.services)
        self.timers = MultiService()
        self.timers.setServiceParent(self.services)
        backlog = min(max(config.daemon.max_connections, 50), LISTEN_BACKLOG_MAX)
        for endpoint in self.listen:
            listen_service(endpoint, self.factory, reactor, backlog).setServiceParent(
                self.listeners
            )
        self.control = control.Control(config.control, reactor)
        self.control.register("status", lambda _args: status(self))
        self.control.register("state", self.state.command)
        self.status_parts: dict[str, Callable[[], object]] = {}  # see daemon.status
        self.status_parts["state"] = self.state.status
        # The control and metrics sockets: stopped after the policy listeners drained.
        self.admin = MultiService()
        self.admin.setServiceParent(self.services)
        if config.control.socket is not None:
            listen_service(
                control.endpoint(config.control), self.control, reactor
            ).setServiceParent(self.admin)
        self.metrics = Metrics(self)
        self.metrics.add(StateCollector(self.state))
        self.metrics.add(DnsCollector(self.dns))
        if config.metrics.listen:
            site = self.metrics.site(config.metrics.allow, self)
            listen_service(config.metrics.listen, site, reactor).setServiceParent(self.admin)
        self.started = time.time()
        self.last_reload: dict[str, object] | None = None
        self._add_timers()
        # A SIGHUP during a reload queues one more, so the file's latest
        # state always wins and loads never overlap.
        self._reload: Deferred[None] | None = None
        self._reload_again = False
        self._loader: threading.Thread | None = None  # the last load's thread
        self._stuck: threading.Thread | None = None  # a load that timed out, maybe still running

    def endpoints(self) -> dict[str, list[str]]:
        """What the daemon listens on, by purpose, as configured at start."""
        socket = self.control_socket
        metrics = self._started_with.metrics.listen
        return {
            "policy": list(self.listen),
            "control": [str(socket)] if socket else [],
            "metrics": [metrics] if metrics else [],
        }

    @property
    def control_socket(self) -> Path | None:
        return self._started_with.control.socket

    def _add_timers(self) -> None:
        TimerService(STATUS_EVERY, self._report_status).setServiceParent(self.timers)
        interval = self.notify.watchdog_interval()
        if interval:
            TimerService(interval, self.notify.ping).setServiceParent(self.timers)

    def start(self) -> None:
        """Bind every listener or raise; announce readiness on the next turn.

        The announcement (the ``started`` event and READY=1) waits for the
        reactor to run, and so for its SIGTERM handler and the caller's SIGHUP
        and SIGUSR1 handlers: whoever acts on it may signal us at once.
        """
        self.services.startService()
        self.state.start()
        _settle_heap()
        self.reactor.callLater(0, self._announce)

    def _announce(self) -> None:
        config = self.answerer.config
        log.info(
            "started",
            listen=list(self.listen),
            config=str(config.path),
            rules=config.ruleset.rule_count,
            digest=config.ruleset.digest,
        )
        for warning in config.warnings:
            log.warning("config_warning", problem=str(warning))
        self.notify.ready(self._status())

    def _status(self) -> str:
        ruleset = self.answerer.config.ruleset
        return (
            f"{ruleset.rule_count} rules ({ruleset.digest}), "
            f"{self.answerer.answered} requests answered, "
            f"{len(self.factory.connections)} connections"
        )

    def _report_status(self) -> None:
        self.notify.status(self._status())
        THROTTLE.report()

    def reload(self) -> None:
        """Load the config file again in a thread; swap it in only if valid."""
        if self._reload is not None:
            self._reload_again = True
            return
        path = self.answerer.config.path
        if self._stuck is not None and self._stuck.is_alive():  # one stuck thread at most
            self._reloaded_as("failed", errors=["an earlier load is stuck"])
            log.error("config_reload_failed", config=str(path), error="an earlier load is stuck")
            return
        self.notify.reloading()
        started = time.monotonic()
        loading, self._loader = in_daemon_thread(self.reactor, load_for_reload, path)
        loading.addTimeout(RELOAD_TIMEOUT, self.reactor)
        self._reload = loading.addCallbacks(self._swap, self._keep, callbackArgs=(started,))
        self._reload.addBoth(self._reloaded)

    def _reloaded(self, _: object) -> None:
        self._reload = None
        self.notify.ready(self._status())
        if self._reload_again:
            self._reload_again = False
            self.reload()

    def _swap(self, config: Config, started: float) -> None:
        old = self.answerer.config
        self.answerer.config = config
        self._reloaded_as("ok", digest=config.ruleset.digest)
        log.info(
            "config_reloaded",
            config=str(config.path),
            rules=config.ruleset.rule_count,
            digest=config.ruleset.digest,
            previous_digest=old.ruleset.digest,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        for warning in config.warnings:
            log.warning("config_warning", problem=str(warning))
        _settle_heap()
        self.dns.configure(config.dns)
        if config.record != old.record:
            self.recorder.reconfigure(config.record)
        self.state.reconfigure(config)
        # Against what runs, not only the previous file: a listen that now
        # matches the running listeners (from --listen, say) needs nothing.
        running = {"listen": self.listen}
        for setting in _RESTART_ONLY:
            new = getattr(config.daemon, setting)
            if new in (getattr(old.daemon, setting), running.get(setting)):
                continue
            log.warning("setting_needs_restart", setting=f"daemon.{setting}")
        for table in _RESTART_ONLY_TABLES:
            if getattr(config, table) != getattr(self._started_with, table):
                log.warning("setting_needs_restart", setting=table)

    def _reloaded_as(self, result: str, **fields: object) -> None:
        self.answerer.stats.reloads[result] += 1
        self.last_reload = {"result": result, "at": iso(time.time()), **fields}

    def _keep(self, failure: object) -> None:
        value = getattr(failure, "value", None)
        if isinstance(value, ConfigError):
            self._reloaded_as("failed", errors=[str(p) for p in value.errors])
        else:
            self._reloaded_as("failed", errors=[repr(value)])
        if isinstance(value, ConfigError):
            log.error(
                "config_reload_failed",
                config=str(self.answerer.config.path),
                errors=[str(p) for p in value.errors],
                kept_digest=self.answerer.config.ruleset.digest,
            )
        elif isinstance(value, defer.TimeoutError):
            self._stuck = self._loader
            log.error(
                "config_reload_failed",
                config=str(self.answerer.config.path),
                error=f"not loaded within {RELOAD_TIMEOUT:g} s (a hung file system?)",
                kept_digest=self.answerer.config.ruleset.digest,
            )
        else:
            log.error("config_reload_failed", error=repr(value))

    def stop(self) -> Deferred[None]:
        """Stop accepting, answer what is in flight, close, within the timeout."""
        self.notify.stopping()
        log.info("stopping", connections=len(self.factory.connections))
        stopped: Deferred[object] = self.listeners.stopService()
        stopped.addCallback(lambda _: self.factory.drain())
        timeout = self.answerer.config.daemon.shutdown_timeout
        stopped.addTimeout(timeout, self.reactor, onTimeoutCancel=self._drain_timeout)
        stopped.addBoth(lambda _: self.timers.stopService())
        stopped.addBoth(lambda _: self.admin.stopService())
        stopped.addBoth(lambda _: self.recorder.close())
        stopped.addBoth(lambda _: self.state.close())
        return stopped.addCallback(self._stopped)

    def _stopped(self, _: object) -> None:
        if self.decisions is not None:
            self.decisions.flush()
        log.info("stopped", answered=self.answerer.answered)

    def toggle_recording(self) -> None:
        """SIGUSR1: recording on if off, off if on (set_enabled logs the new state)."""
        self.recorder.set_enabled(not self.recorder.enabled)

    def _drain_timeout(self, _result: object, timeout: float) -> None:
        log.warning("drain_timeout", seconds=timeout, connections=len(self.factory.connections))
