"""The DNS provider's bookkeeping and its Twisted adapter, on a fake clock.

`FakeResolver` is a hand-written stand-in for ``twisted.names.client.Resolver``
(its ``lookupAddress``/``lookupText`` return Deferreds the test fires); the
real resolver against a real DNS server is tests/integration/test_dns_lists.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from structlog.testing import capture_logs
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns, error

from postgate.answer import ABSENT
from postgate.config.dns import DnsConfig
from postgate.daemon.dns import DnsProvider
from postgate.rules.dnsbl import NOT_LISTED, DnsAnswer
from postgate.state.dns import SKIPPED, TIMED_OUT, Breaker, DnsCache, Lookups
from postgate.wire.codec import PolicyRequest

NAME = "dns:bl.example:2.0.0.127"
REQUEST = PolicyRequest({})


@dataclass
class FakeResolver:
    asked: list[tuple[str, str]] = field(default_factory=list)
    pending: list[Deferred[object]] = field(default_factory=list)

    def lookupAddress(self, name: str, timeout: object = None) -> Deferred[object]:
        return self._ask("A", name)

    def lookupText(self, name: str, timeout: object = None) -> Deferred[object]:
        return self._ask("TXT", name)

    def _ask(self, kind: str, name: str) -> Deferred[object]:
        self.asked.append((kind, name))
        self.pending.append(Deferred())
        return self.pending[-1]


def a_answer(address: str, ttl: int) -> tuple[list[dns.RRHeader], list[object], list[object]]:
    record = dns.RRHeader(
        b"2.0.0.127.bl.example", dns.A, ttl=ttl, payload=dns.Record_A(address, ttl)
    )
    return [record], [], []


def txt_answer(text: bytes) -> tuple[list[dns.RRHeader], list[object], list[object]]:
    record = dns.RRHeader(b"x", dns.TXT, payload=dns.Record_TXT(text))
    return [record], [], []


def nxdomain(soa_minimum: int) -> error.DNSNameError:
    message = dns.Message(rCode=dns.ENAME)
    soa = dns.Record_SOA(minimum=soa_minimum, ttl=3600)
    message.authority = [dns.RRHeader(b"bl.example", dns.SOA, ttl=3600, payload=soa)]
    return error.DNSNameError(message)


def provider(**settings: object) -> tuple[DnsProvider, FakeResolver, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    resolver = FakeResolver()
    config = DnsConfig(**{"deadline": 0.5, "min_ttl": 10, "max_ttl": 100, **settings})  # type: ignore[arg-type]
    return DnsProvider(config, reactor, resolver), resolver, reactor


def got(deferred: Deferred[object]) -> object:
    results: list[object] = []

    def keep(result: object) -> object:
        results.append(result)
        return result

    deferred.addBoth(keep)
    return results[0] if results else ABSENT


class TestCache:
    def test_entries_expire_and_the_oldest_go_first(self) -> None:
        cache = DnsCache(2)
        cache.put("a", NOT_LISTED, 10.0)
        cache.put("b", NOT_LISTED, 10.0)
        cache.put("c", NOT_LISTED, 5.0)
        assert (None, NOT_LISTED, None) == (
            cache.get("a", 1.0),
            cache.get("b", 1.0),
            cache.get("c", 6.0),
        )

    def test_ttls_are_bounded(self) -> None:
        lookups = Lookups(DnsConfig(min_ttl=60, max_ttl=3600, negative_ttl=300))
        assert (60, 3600, 300, 120) == (
            lookups.ttl(5),
            lookups.ttl(86400),
            lookups.ttl(None),
            lookups.ttl(120),
        )


class TestBreaker:
    def test_opens_after_failures_in_a_row_then_lets_one_probe_through(self) -> None:
        breaker = Breaker(3, 30.0)
        assert [False, False, True] == [breaker.failed("z", 0.0) for _ in range(3)]
        assert breaker.blocks("z", 29.0)
        assert not breaker.blocks("z", 30.0)
        breaker.probing("z")
        assert breaker.blocks("z", 31.0)  # one probe at a time
        assert breaker.succeeded("z")
        assert not breaker.blocks("z", 31.0)

    def test_a_success_resets_the_count(self) -> None:
        breaker = Breaker(2, 30.0)
        breaker.failed("z", 0.0)
        breaker.succeeded("z")
        assert not breaker.failed("z", 0.0)


class TestProvider:
    def test_a_listing_with_text_is_cached_for_its_ttl(self) -> None:
        dns_list, resolver, reactor = provider()
        assert ABSENT is dns_list.peek(NAME, REQUEST, 0.0)
        asked = dns_list.fetch(NAME, REQUEST, 0.0)
        resolver.pending[0].callback(a_answer("127.0.0.2", 30))
        resolver.pending[1].callback(txt_answer(b"listed, see https://bl.example"))
        listed = DnsAnswer(("127.0.0.2",), "listed, see https://bl.example")
        assert listed == got(asked)
        assert listed == dns_list.peek(NAME, REQUEST, 0.0)
        reactor.advance(31)
        assert ABSENT is dns_list.peek(NAME, REQUEST, 0.0)
        stats = dns_list.lookups.stats["bl.example"]
        assert (1, 1, 1) == (stats.lookups, stats.listed, stats.cache_hits)

    def test_nxdomain_is_cached_by_the_soa_minimum(self) -> None:
        dns_list, resolver, reactor = provider()
        asked = dns_list.fetch(NAME, REQUEST, 0.0)
        resolver.pending[0].errback(nxdomain(20))
        assert NOT_LISTED == got(asked)
        reactor.advance(19)
        assert NOT_LISTED == dns_list.peek(NAME, REQUEST, 0.0)
        reactor.advance(2)
        assert ABSENT is dns_list.peek(NAME, REQUEST, 0.0)

    def test_requests_share_one_query_and_each_has_its_deadline(self) -> None:
        dns_list, resolver, reactor = provider()
        first = dns_list.fetch(NAME, REQUEST, 0.0)
        reactor.advance(0.3)
        second = dns_list.fetch(NAME, REQUEST, 0.0)
        assert 1 == len(resolver.asked)
        reactor.advance(0.2)
        assert (TIMED_OUT, ABSENT) == (got(first), got(second))
        resolver.pending[0].errback(nxdomain(60))  # late: fills the cache
        assert NOT_LISTED == got(second)
        assert NOT_LISTED == dns_list.peek(NAME, REQUEST, 0.0)

    def test_a_listing_whose_text_is_late_still_counts(self) -> None:
        dns_list, resolver, reactor = provider()
        asked = dns_list.fetch(NAME, REQUEST, 0.0)
        resolver.pending[0].callback(a_answer("127.0.0.2", 30))
        reactor.advance(0.5)
        assert DnsAnswer(("127.0.0.2",)) == got(asked)

    def test_a_cancelled_wait_leaves_the_query_running(self) -> None:
        dns_list, resolver, _ = provider()
        first = dns_list.fetch(NAME, REQUEST, 0.0)
        second = dns_list.fetch(NAME, REQUEST, 0.0)
        first.cancel()
        first.addErrback(lambda _: None)
        resolver.pending[0].errback(nxdomain(60))
        assert NOT_LISTED == got(second)

    def test_each_failure_is_counted_and_the_breaker_opens_then_closes(self) -> None:
        dns_list, resolver, reactor = provider(breaker_failures=3, breaker_seconds=10.0)
        failures = [
            error.DNSServerError(dns.Message()),
            error.DNSQueryRefusedError(dns.Message()),
            error.DNSQueryTimeoutError(None),
        ]
        for index, failure in enumerate(failures):
            asked = dns_list.fetch(NAME, REQUEST, 0.0)
            resolver.pending[index].errback(failure)
            assert got(asked).failure  # type: ignore[attr-defined]
        stats = dns_list.lookups.stats["bl.example"]
        assert (1, 1, 1, 1) == (stats.servfail, stats.refused, stats.timeouts, stats.breaker_opened)
        assert SKIPPED == dns_list.peek(NAME, REQUEST, 0.0)
        reactor.advance(10)
        assert ABSENT is dns_list.peek(NAME, REQUEST, 0.0)
        asked = dns_list.fetch(NAME, REQUEST, 0.0)
        resolver.pending[-1].errback(nxdomain(60))
        assert NOT_LISTED == got(asked)
        assert not dns_list.lookups.breaker.is_open("bl.example")

    def test_answers_outside_127_8_are_malformed_and_refusal_codes_refused(self) -> None:
        dns_list, resolver, _ = provider()
        asked = dns_list.fetch(NAME, REQUEST, 0.0)
        resolver.pending[0].callback(a_answer("192.0.2.1", 30))
        other = dns_list.fetch("dns:bl.example:3.0.0.127", REQUEST, 0.0)
        resolver.pending[1].callback(a_answer("127.255.255.254", 30))
        assert ("malformed", "refused") == (got(asked).failure, got(other).failure)  # type: ignore[attr-defined]

    def test_a_reload_keeps_the_cache_unless_the_resolver_changes(self) -> None:
        dns_list, resolver, _ = provider()
        asked = dns_list.fetch(NAME, REQUEST, 0.0)
        resolver.pending[0].errback(nxdomain(60))
        got(asked)
        dns_list.configure(DnsConfig(deadline=0.5, min_ttl=10, max_ttl=100, lists={}))
        assert NOT_LISTED == dns_list.peek(NAME, REQUEST, 0.0)
        dns_list.configure(DnsConfig(deadline=0.4))
        assert ABSENT is dns_list.peek(NAME, REQUEST, 0.0)

    def test_a_slow_zone_is_logged_once_not_per_request(self) -> None:
        dns_list, resolver, reactor = provider()
        with capture_logs() as logs:
            for index, prefix in enumerate(("3.0.0.127", "4.0.0.127")):
                asked = dns_list.fetch(f"dns:bl.example:{prefix}", REQUEST, 0.0)
                reactor.advance(0.6)  # past the deadline
                resolver.pending[index].errback(nxdomain(60))  # late: cached, still slow
                assert TIMED_OUT == got(asked)
            asked = dns_list.fetch(NAME, REQUEST, 0.0)
            resolver.pending[-1].errback(nxdomain(60))  # in time: the outage ends
            assert NOT_LISTED == got(asked)
        assert ["dns_list_failing", "dns_list_recovered"] == [e["event"] for e in logs]
