"""Prometheus metrics at ``/metrics`` on a listener of their own (``[metrics] listen``).

Nothing here runs per request: the hot path adds to the plain counters of
`postgate.daemon.stats`, and `DaemonCollector` turns them into metric
families when Prometheus scrapes (every 15 to 60 s), with prometheus_client's
text exposition. Labels are rule ids and fixed words only (a protocol state
Postfix defines, an action class, a refusal reason), never request values, so
the number of series is what the configuration makes it.

The listener is off unless configured; the policy port never serves it. TCP
peers must be in ``[metrics] allow`` (loopback by default), checked before
HTTP is spoken, as the policy listener checks ``daemon.allow``
(`postgate.daemon.access`); a UNIX socket is guarded by its file mode.

Other features add their own metrics with a collector, an object whose
``collect()`` yields prometheus_client metric families (``CounterMetricFamily``
and friends), reading counters they keep themselves::

    daemon.metrics.add(MyStoreCollector(store))

Keep to the rules above: name metrics ``postgate_<feature>_...``, label
them with configured names (a limit's or a DNS list's id) and fixed words,
and count in plain integers on the hot path rather than calling
prometheus_client there (its metric objects take a lock per update).
docs/operations.md lists every metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from twisted.web.resource import Resource
from twisted.web.server import Site

from postgate import __version__
from postgate.daemon.access import describe, network_allowed
from postgate.daemon.stats import BOUNDS_US
from postgate.rules.networks import NetworkSet, parse_network

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.registry import Collector
    from twisted.internet.interfaces import IAddress
    from twisted.web.http import Request as HTTPRequest
    from twisted.web.server import Request

    from postgate.daemon.service import Daemon

log = structlog.get_logger("postgate")

PATH: Final = b"/metrics"
SCRAPE_TIMEOUT: Final = 30.0
# What `generate_latest` writes, named as every Prometheus version reads it
# (newer prometheus_client releases call it version 1.0.0).
CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"


class DaemonCollector:
    """The daemon's own metrics, read from `Stats`, the factory and the recorder at scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Any]:
        daemon = self._daemon
        stats = daemon.answerer.stats
        yield from self._answers(daemon)
        yield _gauge(
            "postgate_connections_open",
            "Policy connections open now.",
            len(daemon.factory.connections),
        )
        yield _gauge(
            "postgate_connections_max",
            "daemon.max_connections: connections past it are refused.",
            daemon.answerer.config.daemon.max_connections,
        )
        refused = CounterMetricFamily(
            "postgate_connections_refused",
            "Policy connections refused: network (not in daemon.allow), credentials "
            "(daemon.allow_users/groups), max_connections (the limit).",
            labels=["reason"],
        )
        for reason, count in stats.refused.items():
            refused.add_metric([reason], count)
        yield refused
        yield _counter(
            "postgate_protocol_errors",
            "Connections closed for a malformed request.",
            stats.protocol_errors,
        )
        reloads = CounterMetricFamily(
            "postgate_reloads", "Configuration reloads by result.", labels=["result"]
        )
        for result, count in stats.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        failed = daemon.last_reload is not None and daemon.last_reload["result"] != "ok"
        yield _gauge(
            "postgate_reload_last_success",
            "0 while the last reload failed (the previous rules still answer), else 1.",
            0 if failed else 1,
        )
        yield from self._config(daemon)
        yield from self._recording(daemon)

    def _answers(self, daemon: Daemon) -> Iterator[Any]:
        stats = daemon.answerer.stats
        requests = CounterMetricFamily(
            "postgate_requests", "Requests answered, by protocol_state.", labels=["protocol_state"]
        )
        for state, count in stats.requests.items():
            requests.add_metric([state], count)
        yield requests
        for name, text, observed in (
            ("postgate_decisions", "Answers by deciding rule id and action class.", False),
            (
                "postgate_observed",
                'Rules in mode = "observe" that would have decided, by rule and action class.',
                True,
            ),
        ):
            family = CounterMetricFamily(name, text, labels=["rule", "action_class"])
            for (rule, cls), count in sorted(stats.by_class(observed=observed).items()):
                family.add_metric([rule, cls], count)
            yield family
        yield _counter(
            "postgate_evaluation_errors",
            "Answers that took daemon.on_error because deciding failed (rule ON_ERROR).",
            daemon.answerer.errors,
        )
        yield _latency(stats.buckets, stats.latency_us)

    def _config(self, daemon: Daemon) -> Iterator[Any]:
        config = daemon.answerer.config
        info = InfoMetricFamily(
            "postgate_ruleset", "The loaded configuration: its ruleset digest (postgate check)."
        )
        info.add_metric([], {"digest": config.ruleset.digest, "version": __version__})
        yield info
        rules = GaugeMetricFamily("postgate_rules", "Rules and groups in the loaded configuration.")
        rules.add_metric([], config.ruleset.rule_count)
        yield rules
        dry = GaugeMetricFamily(
            "postgate_dry_run", "1 when daemon.dry_run sends DUNNO for every answer."
        )
        dry.add_metric([], int(config.daemon.dry_run))
        yield dry
        start = GaugeMetricFamily(
            "postgate_start_time_seconds", "When the daemon started (Unix time)."
        )
        start.add_metric([], daemon.started)
        yield start

    def _recording(self, daemon: Daemon) -> Iterator[Any]:
        recorder = daemon.recorder
        enabled = GaugeMetricFamily("postgate_recording_enabled", "1 while requests are recorded.")
        enabled.add_metric([], int(recorder.enabled))
        yield enabled
        yield _counter(
            "postgate_recording_written", "Requests written to the recording.", recorder.written
        )
        yield _counter(
            "postgate_recording_dropped", "Requests the recorder could not write.", recorder.dropped
        )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    family.add_metric([], value)
    return family


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text)
    family.add_metric([], value)
    return family


def _latency(buckets: list[int], total_us: int) -> HistogramMetricFamily:
    """The answer step's time (deciding, gathering facts, logging), in seconds."""
    cumulative, rows = 0, []
    for bound, count in zip((*BOUNDS_US, None), buckets, strict=True):
        cumulative += count
        rows.append(("+Inf" if bound is None else f"{bound / 1e6:g}", cumulative))
    family = HistogramMetricFamily(
        "postgate_decision_seconds", "Time from a request's arrival to its answer being ready."
    )
    family.add_metric([], rows, total_us / 1e6)
    return family


class Metrics:
    """The registry the listener serves; features `add` their collectors to it."""

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        ProcessCollector(namespace="postgate", registry=self.registry)

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    def site(self, allow: tuple[str, ...], daemon: Daemon) -> MetricsSite:
        return MetricsSite(_Page(self.registry), _networks(allow), daemon)


class _Page(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        if request.path != PATH:
            request.setResponseCode(404)
            return b"postgate serves /metrics only\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE)  # type: ignore[no-untyped-call]
        return generate_latest(self._registry)


class MetricsSite(Site):
    """HTTP for Prometheus, for the peers ``[metrics] allow`` names; no access log."""

    noisy = False

    def __init__(self, page: Resource, allow: NetworkSet, daemon: Daemon) -> None:
        # A scrape takes milliseconds; Twisted's default 12 h would let a
        # silent peer hold its connection half a day.
        super().__init__(page, timeout=SCRAPE_TIMEOUT)  # type: ignore[no-untyped-call]
        self._allow = allow
        self._daemon = daemon

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if addr is None or not network_allowed(addr, self._allow):
            log.warning(
                "connection_refused",
                listener="metrics",
                peer=describe(addr) if addr else "",
                reason="not in metrics.allow",
            )
            return None
        return super().buildProtocol(addr)  # type: ignore[no-untyped-call]

    def log(self, request: HTTPRequest) -> None:
        """A scrape every few seconds is not worth a log line."""


def _networks(items: tuple[str, ...]) -> NetworkSet:
    found = [parse_network(item)[0] for item in items]
    return NetworkSet.build([net for net in found if net is not None])


__all__ = ["PATH", "DaemonCollector", "Metrics", "MetricsSite"]
