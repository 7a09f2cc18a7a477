"""The ``[dns]`` table: the resolver, the deadline, the cache, the breaker and the lists.

A list is a zone asked about one request attribute (``query``), the answers
that count (postscreen_dnsbl_sites' ``d.d.d.[a..b]`` octet patterns, or a bit
mask) and a weight that a rule's ``dnsbl_score`` sums (negative for allow
lists). Every mistake is reported at its place (``dns.lists.zen.answers[0]``)
and loading goes on, as for every other table. docs/rules.md, DNS lists.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.config.problems import Problems

QUERIES: Final = (
    "client_address",
    "sender_domain",
    "helo_name",
    "client_name",
    "reverse_client_name",
)
FAILURES: Final = ("unlisted", "listed")
DNS_KEYS: Final = (
    "servers",
    "resolv_conf",
    "deadline",
    "query_timeout",
    "cache_size",
    "min_ttl",
    "max_ttl",
    "negative_ttl",
    "breaker_failures",
    "breaker_seconds",
    "lists",
    "answers",
)
LIST_KEYS: Final = ("zone", "query", "answers", "mask", "weight", "on_failure")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LABEL: Final = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_DOMAIN: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOT_OUTSIDE: Final = re.compile(r"\.(?![^\[]*\])")
_OCTET: Final = re.compile(r"(\d{1,3})|\[(\d{1,3})\.\.(\d{1,3})\]|\[(\d{1,3}(?:;\d{1,3})*)\]")
# DNSBL operators answer 127.255.255.0/24 when they refuse a query (Spamhaus:
# 127.255.255.254 for a query through a public resolver): an error, not a listing.
REFUSAL_NET: Final = ipaddress.IPv4Network("127.255.255.0/24")
LISTING_NET: Final = ipaddress.IPv4Network("127.0.0.0/8")

Octets = tuple[tuple[int, int], ...]  # per octet: ranges (low, high) that match


@dataclass(frozen=True, slots=True)
class AnswerPattern:
    """One ``127.0.0.[2..11]``: each octet a number, a ``[a..b]`` range or ``[a;b;c]``."""

    text: str
    octets: tuple[Octets, Octets, Octets, Octets]

    def matches(self, address: ipaddress.IPv4Address) -> bool:
        return all(
            any(low <= byte <= high for low, high in ranges)
            for byte, ranges in zip(address.packed, self.octets, strict=True)
        )


@dataclass(frozen=True, slots=True)
class DnsList:
    """One named list: what is asked, which answers count, and its weight."""

    name: str
    zone: str
    query: str = "client_address"
    answers: tuple[AnswerPattern, ...] = ()  # none and no mask: any 127/8 answer counts
    mask: int | None = None
    weight: int = 1
    on_failure: str = "unlisted"

    def counts(self, addresses: tuple[str, ...]) -> bool:
        """Whether one of the list's answers lists the name (postscreen_dnsbl_sites' filter)."""
        for text in addresses:
            address = _address(text)
            if address not in LISTING_NET or address in REFUSAL_NET:
                continue
            if self.mask is not None:
                if int(address) & self.mask:
                    return True
            elif not self.answers or any(p.matches(address) for p in self.answers):
                return True
        return False

    def describe(self) -> str:
        """One line for ``postgate show``: what is asked, what counts, the weight."""
        if self.mask is not None:
            counts = f"answers with a bit of {ipaddress.IPv4Address(self.mask)}"
        elif self.answers:
            counts = "answers " + ", ".join(pattern.text for pattern in self.answers)
        else:
            counts = "any 127/8 answer"
        failure = "; a failed lookup counts as listed" if self.on_failure == "listed" else ""
        return (
            f"{self.name}: {self.zone} asked about {self.query}, "
            f"{counts} count, weight {self.weight:+d}{failure}"
        )


@functools.lru_cache(maxsize=1024)
def _address(text: str) -> ipaddress.IPv4Address:
    """Parsed once: a handful of listing codes recur in every answer."""
    return ipaddress.IPv4Address(text)


def answer_problem(addresses: tuple[str, ...]) -> str:
    """``refused`` for an operator's refusal code, ``malformed`` for an answer outside 127/8.

    Either way the lookup failed: an address that is not a listing code says
    nothing about the client (RFC 5782 section 2.3 keeps codes in 127/8).
    """
    if not addresses:
        return ""
    parsed = [_address(a) for a in addresses]
    if any(a in REFUSAL_NET for a in parsed):
        return "refused"
    if any(a not in LISTING_NET for a in parsed):
        return "malformed"
    return ""


@dataclass(frozen=True, slots=True)
class FixedAnswer:
    """A ``[dns.answers]`` entry for replay and tests: addresses and TXT, or a failure."""

    addresses: tuple[str, ...] = ()
    text: str = ""
    failure: str = ""  # "servfail", "timeout", "refused": the lookup failed


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The resolver and its bounds, and the named lists rules refer to."""

    # Explicit (host, port) servers; empty: those of ``resolv_conf``.
    servers: tuple[tuple[str, int], ...] = ()
    resolv_conf: str = "/etc/resolv.conf"
    # Seconds one request waits for all its lookups together; at most
    # daemon.deadline, which bounds every fact (docs/operations.md, DNS lists).
    deadline: float = 0.8
    # Seconds a lookup may run on after its request stopped waiting, so a
    # slow answer still fills the cache for the next request.
    query_timeout: float = 3.0
    cache_size: int = 10_000
    min_ttl: int = 60
    max_ttl: int = 3600
    negative_ttl: int = 300  # NXDOMAIN without an SOA to take the TTL from
    breaker_failures: int = 5
    breaker_seconds: float = 30.0
    lists: Mapping[str, DnsList] = field(default_factory=lambda: MappingProxyType({}))
    answers: Mapping[str, FixedAnswer] = field(default_factory=lambda: MappingProxyType({}))


def parse_dns(raw: Any, daemon_deadline: float, p: Problems) -> DnsConfig:
    """The ``[dns]`` table, every problem reported; defaults where a value is bad."""
    base = DnsConfig()
    if raw is None:
        raw = {}  # the defaults, the deadline still bounded by daemon.deadline
    if not isinstance(raw, dict):
        p.error("dns", "must be a table ([dns])")
        return base
    check_keys(raw, DNS_KEYS, "dns", p)
    get = Values(raw, "dns", p)
    deadline = get.number("deadline", min(base.deadline, daemon_deadline), 0.01, 60)
    if deadline > daemon_deadline:
        p.error(
            "dns.deadline",
            f"{deadline:g} s exceeds daemon.deadline ({daemon_deadline:g} s), which bounds "
            "every fact: the answer would stop waiting first; lower it or raise daemon.deadline",
        )
    min_ttl = get.count("min_ttl", base.min_ttl, 0, 86_400)
    max_ttl = get.count("max_ttl", base.max_ttl, 1, 7 * 86_400)
    if min_ttl > max_ttl:
        p.error("dns.min_ttl", f"{min_ttl} is above max_ttl ({max_ttl})")
    return DnsConfig(
        servers=_servers(get),
        resolv_conf=_text(get, "resolv_conf", base.resolv_conf),
        deadline=deadline,
        query_timeout=get.number("query_timeout", base.query_timeout, 0.1, 60),
        cache_size=get.count("cache_size", base.cache_size, 0, 10_000_000),
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        negative_ttl=get.count("negative_ttl", base.negative_ttl, 0, 86_400),
        breaker_failures=get.count("breaker_failures", base.breaker_failures, 1, 10_000),
        breaker_seconds=get.number("breaker_seconds", base.breaker_seconds, 0.1, 3600),
        lists=MappingProxyType(_lists(raw.get("lists", {}), p)),
        answers=MappingProxyType(_answers(raw.get("answers", {}), p)),
    )


def _text(get: Values, key: str, default: str) -> str:
    value = get.table.get(key, default)
    if not isinstance(value, str) or not value:
        get.problems.error(get.where(key), f"must be a non-empty string, not {value!r}")
        return default
    return value


def _servers(get: Values) -> tuple[tuple[str, int], ...]:
    found = []
    for text in get.strings("servers", (), server_problem):
        server = parse_server(text)
        if server is not None:
            found.append(server)
    return tuple(found)


def parse_server(text: str) -> tuple[str, int] | None:
    """``127.0.0.1``, ``127.0.0.1:5353``, ``::1`` or ``[::1]:5353`` as (address, port)."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            return None
        port = int(digits)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, port) if 0 < port < 65536 else None


def server_problem(text: str) -> str | None:
    if parse_server(text) is None:
        return (
            f"{text!r} is not a server address: write an IP address, with a port as "
            "127.0.0.1:5353 or [::1]:5353 (names are not resolved)"
        )
    return None


def _lists(raw: Any, p: Problems) -> dict[str, DnsList]:
    if not isinstance(raw, dict):
        p.error("dns.lists", "must be a table of lists ([dns.lists.NAME])")
        return {}
    found = {}
    for name, table in raw.items():
        place = f"dns.lists.{name}"
        if not _NAME.fullmatch(name):
            p.error(place, "a list name is letters, digits, _ and -")
        elif not isinstance(table, dict):
            p.error(place, "must be a table ([dns.lists.NAME])")
        else:
            found[name] = _list(name, table, place, p)
    return found


def _list(name: str, table: Mapping[str, Any], place: str, p: Problems) -> DnsList:
    check_keys(table, LIST_KEYS, place, p)
    get = Values(table, place, p)
    zone = table.get("zone")
    if not isinstance(zone, str) or not is_domain(zone.rstrip(".")):
        p.error(f"{place}.zone", f"must be a DNS zone like 'zen.spamhaus.org', not {zone!r}")
        zone = "invalid."
    answers = tuple(
        pattern
        for index, text in enumerate(get.strings("answers", (), lambda _: None))
        if (pattern := _pattern(text, f"{place}.answers[{index}]", p)) is not None
    )
    mask = _mask(table.get("mask"), f"{place}.mask", p)
    if answers and mask is not None:
        p.error(place, "give answers or mask, not both")
    return DnsList(
        name=name,
        zone=zone.rstrip(".").lower(),
        query=get.choice("query", "client_address", QUERIES),
        answers=answers,
        mask=mask,
        weight=get.count("weight", 1, -1000, 1000),
        on_failure=get.choice("on_failure", "unlisted", FAILURES),
    )


def is_domain(name: str) -> bool:
    """A host name the DNS can carry: labels of letters, digits, ``-`` and ``_``, 253 at most."""
    return len(name) <= 253 and _DOMAIN.fullmatch(name) is not None


def _pattern(text: str, place: str, p: Problems) -> AnswerPattern | None:
    parts = _DOT_OUTSIDE.split(text)  # the dots of "[2..11]" do not separate octets
    octets = [_ranges(found) if (found := _OCTET.fullmatch(part)) else None for part in parts]
    if len(octets) != 4 or None in octets:
        p.error(place, f"{text!r} is not an answer pattern like 127.0.0.2 or 127.0.0.[2..11]")
        return None
    a, b, c, d = (o for o in octets if o is not None)
    return AnswerPattern(text, (a, b, c, d))


def _ranges(found: re.Match[str]) -> Octets | None:
    one, low, high, choices = found.groups()
    ranges: Octets
    if one is not None:
        ranges = ((int(one), int(one)),)
    elif low is not None:
        ranges = ((int(low), int(high)),)
    else:
        ranges = tuple((int(c), int(c)) for c in choices.split(";"))
    ok = all(0 <= a <= b <= 255 for a, b in ranges)
    return ranges if ok else None


def _mask(value: Any, place: str, p: Problems) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 32:
        return value
    if isinstance(value, str):
        try:
            mask = int(ipaddress.IPv4Address(value))
        except ValueError:
            mask = 0
        if mask:
            return mask
    p.error(place, f"must be a bit mask like '0.0.0.2' or a whole number, not {value!r}")
    return None


def _answers(raw: Any, p: Problems) -> dict[str, FixedAnswer]:
    """``[dns.answers]``: what ``replay`` and ``test`` see instead of the DNS."""
    if not isinstance(raw, dict):
        p.error("dns.answers", 'must be a table: "NAME" = ["127.0.0.2"]')
        return {}
    found = {}
    for name, value in raw.items():
        answer = _fixed(value)
        if answer is None or not is_domain(name.rstrip(".")):
            p.error(
                f"dns.answers.{name}",
                'must be a query name with ["127.0.0.2"], { a = [...], txt = "..." }, '
                'or "servfail", "refused" or "timeout"',
            )
            continue
        found[name.rstrip(".").lower()] = answer
    return found


def _fixed(value: Any) -> FixedAnswer | None:
    if value in ("servfail", "refused", "timeout"):
        return FixedAnswer(failure=value)
    if isinstance(value, list):
        value = {"a": value}
    if not isinstance(value, dict) or set(value) - {"a", "txt"}:
        return None
    addresses, text = value.get("a", []), value.get("txt", "")
    if not isinstance(addresses, list) or not isinstance(text, str):
        return None
    try:
        return FixedAnswer(tuple(str(ipaddress.IPv4Address(a)) for a in addresses), text)
    except ValueError:
        return None


__all__ = [
    "AnswerPattern",
    "DnsConfig",
    "DnsList",
    "FixedAnswer",
    "answer_problem",
    "is_domain",
    "parse_dns",
    "parse_server",
]
