"""/metrics for the state store, rate limits, greylisting and DNS lists.

Read at scrape time from the plain counters each provider keeps
(`postgate.daemon.metrics` explains why nothing here runs per request).
Labels are configured names (a limit's rule id, a DNS list's zone) and fixed
words (a greylisting outcome, a DNS answer's kind), never request values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.core import Metric

    from postgate.daemon.dns import DnsProvider
    from postgate.daemon.state import EmbeddedState

DNS_OUTCOMES: Final = ("listed", "nxdomain", "timeouts", "servfail", "refused", "malformed")


class StateCollector:
    """Limits, greylisting and the state backend, from the daemon's providers."""

    def __init__(self, state: EmbeddedState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        exceeded = CounterMetricFamily(
            "postgate_limit_exceeded", "Requests a limit refused, by limit", labels=["limit"]
        )
        for rule, count in sorted(getattr(state.providers["limit"], "exceeded", {}).items()):
            exceeded.add_metric([rule], count)
        yield exceeded
        grey = CounterMetricFamily(
            "postgate_greylist_outcomes",
            "Greylisting's judgements: new, early, restarted (deferred), passed, known, "
            "allowlisted (let through)",
            labels=["outcome"],
        )
        for why, count in sorted(getattr(state.providers["greylist"], "outcomes", {}).items()):
            grey.add_metric([why], count)
        yield grey
        yield GaugeMetricFamily(
            "postgate_limit_counters",
            "Rate-limit counters held in memory",
            len(state.store.counters),
        )
        yield from _backend(state)


def _backend(state: EmbeddedState) -> Iterator[Metric]:
    redis = state.redis
    backend = "redis" if redis is not None else "embedded"
    up = GaugeMetricFamily(
        "postgate_state_backend_up",
        "1 while the state backend answers (embedded: while its file is written)",
        labels=["backend"],
    )
    if redis is not None:
        up.add_metric([backend], 1 if redis.up and redis.connected else 0)
    else:
        failing = state.disk is not None and state.disk.failing
        up.add_metric([backend], 0 if failing else 1)
    yield up
    if redis is None:
        return
    for name, help_text, value in (
        ("calls", "Scripts run on Redis", redis.calls),
        ("errors", "Scripts that failed or were not sent (Redis down)", redis.errors),
        ("seconds", "Summed round-trip time of the scripts that succeeded", redis.seconds),
    ):
        yield CounterMetricFamily(f"postgate_state_backend_{name}", help_text, value)


class DnsCollector:
    """DNS lists, per zone: lookups, cache hits, answers by kind, latency, breaker."""

    def __init__(self, dns: DnsProvider) -> None:
        self.dns = dns

    def collect(self) -> Iterator[Metric]:
        stats = self.dns.lookups.stats
        breaker = self.dns.lookups.breaker
        lookups = CounterMetricFamily("postgate_dns_lookups", "Queries sent", labels=["zone"])
        hits = CounterMetricFamily("postgate_dns_cache_hits", "Answers from cache", labels=["zone"])
        answers = CounterMetricFamily(
            "postgate_dns_answers", "Lookups by outcome", labels=["zone", "outcome"]
        )
        skipped = CounterMetricFamily(
            "postgate_dns_skipped", "Lookups skipped while the breaker was open", labels=["zone"]
        )
        seconds = CounterMetricFamily(
            "postgate_dns_lookup_seconds", "Summed latency of answered queries", labels=["zone"]
        )
        opened = GaugeMetricFamily(
            "postgate_dns_breaker_open", "1 while the zone's breaker is open", labels=["zone"]
        )
        for zone, zs in sorted(stats.items()):
            lookups.add_metric([zone], zs.lookups)
            hits.add_metric([zone], zs.cache_hits)
            skipped.add_metric([zone], zs.skipped)
            seconds.add_metric([zone], zs.latency_sum)
            opened.add_metric([zone], 1 if breaker.is_open(zone) else 0)
            for outcome in DNS_OUTCOMES:
                answers.add_metric([zone, outcome], getattr(zs, outcome))
        yield from (lookups, hits, answers, skipped, seconds, opened)


__all__ = ["DnsCollector", "StateCollector"]
