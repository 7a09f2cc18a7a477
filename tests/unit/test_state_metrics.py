"""The DNS lists' metrics read the provider's own counters, per zone, at scrape time."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

from postgate.config.dns import DnsConfig
from postgate.daemon.state_metrics import DnsCollector
from postgate.state.dns import Lookups

if TYPE_CHECKING:
    from postgate.daemon.dns import DnsProvider


def test_dns_counters_per_zone_and_outcome() -> None:
    lookups = Lookups(DnsConfig())
    zone = lookups.zone("zen.example")
    zone.lookups, zone.cache_hits, zone.listed, zone.timeouts = 7, 5, 2, 1
    zone.latency_sum = 0.25
    provider = cast("DnsProvider", SimpleNamespace(lookups=lookups))
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in DnsCollector(provider).collect()
        for s in family.samples
    }
    assert 7 == samples["postgate_dns_lookups_total", ("zen.example",)]
    assert 5 == samples["postgate_dns_cache_hits_total", ("zen.example",)]
    assert 2 == samples["postgate_dns_answers_total", ("zen.example", "listed")]
    assert 1 == samples["postgate_dns_answers_total", ("zen.example", "timeouts")]
    assert 0.25 == samples["postgate_dns_lookup_seconds_total", ("zen.example",)]
    assert 0 == samples["postgate_dns_breaker_open", ("zen.example",)]
