"""The daemon's DNS-list provider: a thin adapter over ``twisted.names``.

`peek` answers from the cache (or the open breaker) synchronously, so a warm
cache keeps the hot path free of Deferreds. `fetch` shares one query per name
among the requests that ask for it while it runs, and gives each request its
answer or, at ``dns.deadline``, the timeout outcome; the query itself may run
on to ``dns.query_timeout`` and fill the cache for the next request. The
bookkeeping (cache, breaker, counters, the once-per-outage log) is
`postgate.state.dns.Lookups`; docs/operations.md, DNS lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.names import client, dns, error

from postgate.config.dns import answer_problem
from postgate.rules.dnsbl import NOT_LISTED, DnsAnswer
from postgate.state.dns import TIMED_OUT, Lookups, split_fact

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.names.dns import RRHeader

    from postgate.config.dns import DnsConfig
    from postgate.rules.model import Effect
    from postgate.wire.codec import PolicyRequest

_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (error.DNSServerError, "servfail"),
    (error.DNSQueryRefusedError, "refused"),
    (defer.TimeoutError, "timeout"),  # DNSQueryTimeoutError is one
    (TimeoutError, "timeout"),
)


@dataclass(slots=True)
class _Query:
    """One query in flight, and the requests waiting for it."""

    name: str  # the fact, dns:ZONE:PREFIX
    zone: str
    qname: str
    waiters: list[tuple[Deferred[object], IDelayedCall]] = field(default_factory=list)
    addresses: DnsAnswer | None = None  # the A answer while its TXT is asked


class DnsProvider:
    """Facts ``dns:ZONE:PREFIX`` through a ``twisted.names`` resolver."""

    def __init__(self, config: DnsConfig, reactor: IReactorTime, resolver: Any = None) -> None:
        self._reactor = reactor
        self._given = resolver
        self._resolver: Any = resolver
        self._inflight: dict[str, _Query] = {}
        self.config = config
        self.lookups = Lookups(config)

    def configure(self, config: DnsConfig) -> None:
        """A reload: the cache and counters stay unless the resolver's settings changed."""
        old, self.config = self.config, config
        if _settings(old) != _settings(config):
            self.lookups = Lookups(config)
            self._resolver = self._given

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:  # noqa: ARG002
        return self.lookups.peek(name, self._reactor.seconds())

    def fetch(self, name: str, request: PolicyRequest, now: float) -> Deferred[object]:  # noqa: ARG002
        query = self._inflight.get(name)
        if query is None:
            zone, qname = split_fact(name)
            query = self._inflight[name] = _Query(name, zone, qname)
            self.lookups.started(zone)
            ensureDeferred(self._run(query))
        return self._wait(query)

    def unavailable(self, name: str) -> object:  # noqa: ARG002
        return TIMED_OUT

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:
        """DNS lists have no effects."""

    def _wait(self, query: _Query) -> Deferred[object]:
        def cancel(_: Deferred[object]) -> None:  # the answer step gave up first
            _drop(query, waiter)

        def expire() -> None:
            _drop(query, waiter)
            if query.addresses is not None:  # listed; only the TXT text is late
                waiter.callback(query.addresses)
                return
            self.lookups.timed_out(query.zone)
            waiter.callback(TIMED_OUT)

        waiter: Deferred[object] = Deferred(cancel)
        query.waiters.append((waiter, self._reactor.callLater(self.config.deadline, expire)))
        return waiter

    async def _run(self, query: _Query) -> None:
        started = self._reactor.seconds()
        try:
            answer, ttl = await self._ask(query)
        except Exception:  # noqa: BLE001 - a resolver bug must not leave requests waiting
            answer, ttl = DnsAnswer(failure="malformed"), None
        del self._inflight[query.name]
        now = self._reactor.seconds()
        self.lookups.finished(query.name, answer, ttl, now, now - started)
        for waiter, timer in query.waiters:
            timer.cancel()
            waiter.callback(answer)
        query.waiters.clear()

    async def _ask(self, query: _Query) -> tuple[DnsAnswer, int | None]:
        resolver = self._get_resolver()
        timeout = (self.config.query_timeout,)
        try:
            answers, authority, _ = await resolver.lookupAddress(query.qname, timeout)
        except error.DNSNameError as exc:  # NXDOMAIN: not listed, cached by the SOA
            return NOT_LISTED, _negative_ttl(exc)
        except Exception as exc:  # noqa: BLE001 - each kind is counted, none raised
            return DnsAnswer(failure=_failure(exc)), None
        found = [rr for rr in answers if rr.type == dns.A]
        if not found:  # no data: not listed either
            return NOT_LISTED, _soa_ttl(authority)
        addresses = tuple(rr.payload.dottedQuad() for rr in found)
        failure = answer_problem(addresses)
        if failure:
            return DnsAnswer(failure=failure), None
        query.addresses = DnsAnswer(addresses)
        return DnsAnswer(addresses, await self._text(query.qname)), min(rr.ttl for rr in found)

    async def _text(self, qname: str) -> str:
        """The TXT record Postfix puts in its reply; none, or a failure, is no text."""
        try:
            answers, _, _ = await self._get_resolver().lookupText(
                qname, (self.config.query_timeout,)
            )
        except Exception:  # noqa: BLE001 - the listing stands without its text
            return ""
        texts = [rr.payload.data for rr in answers if rr.type == dns.TXT]
        if not texts:
            return ""
        return b"".join(texts[0]).decode("utf-8", "replace")

    def _get_resolver(self) -> Any:
        """Made on the first lookup: reading resolv.conf is I/O a daemon without lists skips."""
        if self._resolver is None:
            timeout = (self.config.query_timeout,)
            if self.config.servers:
                self._resolver = client.Resolver(  # type: ignore[no-untyped-call]
                    servers=list(self.config.servers), timeout=timeout, reactor=self._reactor
                )
            else:
                self._resolver = client.Resolver(  # type: ignore[no-untyped-call]
                    resolv=self.config.resolv_conf, timeout=timeout, reactor=self._reactor
                )
        return self._resolver


def _drop(query: _Query, waiter: Deferred[object]) -> None:
    for index, (held, timer) in enumerate(query.waiters):
        if held is waiter:
            if timer.active():
                timer.cancel()
            del query.waiters[index]
            return


def _settings(config: DnsConfig) -> DnsConfig:
    """The settings a reload must rebuild the resolver and cache for: all but the lists."""
    return replace(config, lists={}, answers={})


def _failure(exc: BaseException) -> str:
    return next((name for kind, name in _FAILURES if isinstance(exc, kind)), "malformed")


def _negative_ttl(exc: error.DNSNameError) -> int | None:
    message = exc.args[0] if exc.args else None
    return _soa_ttl(message.authority) if isinstance(message, dns.Message) else None


def _soa_ttl(authority: list[RRHeader]) -> int | None:
    """RFC 2308 section 5: a negative answer lives min(SOA TTL, SOA minimum) seconds."""
    for rr in authority:
        if rr.type == dns.SOA and isinstance(rr.payload, dns.Record_SOA):
            return int(min(rr.ttl, rr.payload.minimum))
    return None


__all__ = ["DnsProvider"]
