"""DNS-list answers without the network: the cache, the breaker, the counters, the fixed table.

The daemon's resolver adapter (`postgate.daemon.dns`) keeps its answers in a
`DnsCache` and asks a `Breaker` before each lookup, so a warm cache or an open
breaker answers from ``peek``, synchronously. `Lookups` is that part, free of
Twisted; `FixedAnswers` is what ``replay`` and ``test`` decide with: the
``[dns.answers]`` table, every other name unlisted (docs/rules.md, DNS lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from postgate.rules.dnsbl import NOT_LISTED, DnsAnswer
from postgate.rules.model import ABSENT

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.config.dns import DnsConfig, FixedAnswer
    from postgate.rules.model import Effect
    from postgate.wire.codec import PolicyRequest

log = structlog.get_logger("postgate")

# Outcomes that say the list (or the path to it) is not answering; they feed
# the breaker. NXDOMAIN and listings are answers, however unwelcome.
FAILURES: Final = ("timeout", "servfail", "refused", "malformed")
TIMED_OUT: Final = DnsAnswer(failure="timeout")
SKIPPED: Final = DnsAnswer(failure="breaker")


def split_fact(name: str) -> tuple[str, str]:
    """(zone, query name) of a ``dns:ZONE:PREFIX`` fact."""
    _, zone, prefix = name.split(":", 2)
    return zone, f"{prefix}.{zone}"


@dataclass(slots=True)
class ZoneStats:
    """Counters for one zone, read as plain attributes by the metrics."""

    lookups: int = 0  # queries sent (cache misses not skipped by the breaker)
    cache_hits: int = 0
    listed: int = 0  # answers with A records
    nxdomain: int = 0  # NXDOMAIN or no data: not listed
    timeouts: int = 0  # a request stopped waiting, or the query itself timed out
    servfail: int = 0
    refused: int = 0  # REFUSED, or the operator's 127.255.255.x refusal answer
    malformed: int = 0
    skipped: int = 0  # asked while the breaker was open
    breaker_opened: int = 0
    latency_sum: float = 0.0  # seconds, over answered queries
    latency_count: int = 0
    latency_max: float = 0.0

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class DnsCache:
    """Answers by query name until their TTL runs out; the oldest go first when full.

    A plain dict keeps insertion order, and a put moves its name to the end,
    so the first key is always the oldest.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[str, tuple[float, DnsAnswer]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, qname: str, now: float) -> DnsAnswer | None:
        entry = self.entries.get(qname)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.entries[qname]
            return None
        return entry[1]

    def put(self, qname: str, answer: DnsAnswer, expires: float) -> None:
        if self.size <= 0:
            return
        entries = self.entries
        entries.pop(qname, None)
        entries[qname] = (expires, answer)
        while len(entries) > self.size:
            del entries[next(iter(entries))]


@dataclass(slots=True)
class _Zone:
    failures: int = 0  # in a row
    open_until: float | None = None
    probing: bool = False  # one lookup let through after the pause


class Breaker:
    """Per zone: open after ``failures`` failed lookups in a row, for ``seconds``.

    After the pause one lookup is let through (half open); its success closes
    the breaker, its failure opens it for another pause.
    """

    def __init__(self, failures: int, seconds: float) -> None:
        self.failures, self.seconds = failures, seconds
        self._zones: dict[str, _Zone] = {}

    def is_open(self, zone: str) -> bool:
        state = self._zones.get(zone)
        return state is not None and state.open_until is not None

    def blocks(self, zone: str, now: float) -> bool:
        """Whether a lookup must be skipped: open, and paused or already probing."""
        state = self._zones.get(zone)
        if state is None or state.open_until is None:
            return False
        return now < state.open_until or state.probing

    def probing(self, zone: str) -> None:
        """A lookup went out; while open, it is the one probe of the half-open state."""
        state = self._zones.get(zone)
        if state is not None and state.open_until is not None:
            state.probing = True

    def succeeded(self, zone: str) -> bool:
        """Record an answer; True when this closed an open breaker."""
        state = self._zones.pop(zone, None)
        return state is not None and state.open_until is not None

    def failed(self, zone: str, now: float) -> bool:
        """Record a failure; True when this opened the breaker."""
        state = self._zones.setdefault(zone, _Zone())
        state.failures += 1
        state.probing = False
        if state.open_until is None and state.failures < self.failures:
            return False
        opened = state.open_until is None
        state.open_until = now + self.seconds
        return opened


class Lookups:
    """The cache, breaker and counters of the daemon's DNS provider; no I/O.

    A zone's outage is logged once when it starts (``dns_list_failing``), once
    when the breaker opens, and once when the zone answers again.
    """

    def __init__(self, config: DnsConfig) -> None:
        self.config = config
        self.cache = DnsCache(config.cache_size)
        self.breaker = Breaker(config.breaker_failures, config.breaker_seconds)
        self.stats: dict[str, ZoneStats] = {}
        self._failing: set[str] = set()

    def zone(self, zone: str) -> ZoneStats:
        found = self.stats.get(zone)
        if found is None:
            found = self.stats[zone] = ZoneStats()
        return found

    def peek(self, name: str, now: float) -> object:
        """The cached answer, the breaker's "skipped", or `ABSENT` (then a lookup)."""
        zone = name[4 : name.index(":", 4)]  # "dns:ZONE:PREFIX"; the cache is keyed by name
        entry = self.cache.entries.get(name)  # `DnsCache.get`, inline: once per list and request
        if entry is not None and entry[0] > now:
            stats = self.stats.get(zone) or self.zone(zone)
            stats.cache_hits += 1
            return entry[1]
        if self.breaker.blocks(zone, now):
            self.zone(zone).skipped += 1
            return SKIPPED
        return ABSENT

    def started(self, zone: str) -> None:
        self.zone(zone).lookups += 1
        self.breaker.probing(zone)

    def timed_out(self, zone: str) -> None:
        """A request stopped waiting for this zone (the query may still answer)."""
        self.zone(zone).timeouts += 1
        self._failing_now(zone, "timeout")

    def finished(
        self, name: str, answer: DnsAnswer, ttl: int | None, now: float, took: float
    ) -> None:
        """A query's outcome: counted, cached when it is an answer, fed to the breaker."""
        zone = name[4 : name.index(":", 4)]
        stats = self.zone(zone)
        if answer.failure:
            stats.count("timeouts" if answer.failure == "timeout" else answer.failure)
            self._failing_now(zone, answer.failure)
            if self.breaker.failed(zone, now):
                stats.breaker_opened += 1
                log.warning("dns_breaker_open", zone=zone, seconds=self.config.breaker_seconds)
            return
        stats.count("listed" if answer.addresses else "nxdomain")
        stats.latency_sum += took
        stats.latency_count += 1
        stats.latency_max = max(stats.latency_max, took)
        self.cache.put(name, answer, now + self.ttl(ttl))
        closed = self.breaker.succeeded(zone)
        # An answer after the deadline fills the cache but does not end an
        # outage: a zone that is merely slow would log every request otherwise.
        if closed or (zone in self._failing and took <= self.config.deadline):
            self._failing.discard(zone)
            log.info("dns_list_recovered", zone=zone)

    def ttl(self, ttl: int | None) -> int:
        """The record's TTL (or ``negative_ttl`` without one) within min_ttl..max_ttl."""
        seconds = self.config.negative_ttl if ttl is None else ttl
        return max(self.config.min_ttl, min(self.config.max_ttl, seconds))

    def _failing_now(self, zone: str, reason: str) -> None:
        if zone not in self._failing:
            self._failing.add(zone)
            log.warning("dns_list_failing", zone=zone, reason=reason)


class FixedAnswers:
    """``[dns.answers]`` as a provider: replay and tests decide DNS-list rules offline."""

    def __init__(self, answers: Mapping[str, FixedAnswer]) -> None:
        self.answers = answers

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:  # noqa: ARG002
        found = self.answers.get(split_fact(name)[1])
        if found is None:
            return NOT_LISTED
        if found.failure:
            return DnsAnswer(failure=found.failure)
        return DnsAnswer(found.addresses, found.text)

    async def fetch(self, name: str, request: PolicyRequest, now: float) -> object:
        return self.peek(name, request, now)

    def unavailable(self, name: str) -> object:  # noqa: ARG002
        return TIMED_OUT

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:
        """DNS lists have no effects."""


__all__ = [
    "SKIPPED",
    "TIMED_OUT",
    "Breaker",
    "DnsCache",
    "FixedAnswers",
    "Lookups",
    "ZoneStats",
    "split_fact",
]
