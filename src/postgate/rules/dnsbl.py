"""DNS-list checks: ``dnsbl = "zen"`` (listed or not) and ``dnsbl_score = { ge = 3 }``.

Each list of ``[dns.lists]`` (`postgate.config.dns`) is asked about one
attribute: the client address reversed (IPv4, RFC 5782 section 2.1) or
nibble-reversed (IPv6, section 2.4), or a domain (sender domain, HELO, client
name: RHSBL, section 2.2). The fact for one lookup is ``dns:ZONE:PREFIX`` and
its value a `DnsAnswer`; lists that share a zone share the lookup. Checks
decide purely from the answers (docs/rules.md, DNS lists).
"""

from __future__ import annotations

import operator
import socket
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from postgate.config.dns import DnsList, answer_problem, is_domain, parse_dns
from postgate.config.problems import Problems
from postgate.config.values import suggest
from postgate.rules.match import COMPARISONS
from postgate.rules.model import NO_VALUES, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.rules.conditions import Context
    from postgate.wire.codec import PolicyRequest

PREFIX: Final = "dns"
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, RFC 4291 section 2.5.5.2
MODES: Final = ("listed", "unlisted", "failed")
# How Postfix names what was looked up in its reject_rbl_* replies.
_CLASS: Final = {
    "client_address": "Client host",
    "client_name": "Client host",
    "reverse_client_name": "Unverified Client host",
    "helo_name": "Helo command",
    "sender_domain": "Sender address",
}
_OPS: Final[Mapping[str, Callable[[int, int], bool]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
}


class DnsAnswer(NamedTuple):
    """One lookup's outcome: A records and TXT text, or why it failed.

    No addresses and no failure is NXDOMAIN or no data: not listed.
    """

    addresses: tuple[str, ...] = ()
    text: str = ""
    failure: str = ""  # timeout, servfail, refused, malformed, breaker


NOT_LISTED: Final = DnsAnswer()


def reversed_address(address: str) -> str | None:
    """``1.2.0.192`` for 192.0.2.1; 32 nibbles for IPv6; None for no address.

    inet_pton parses strictly and in C: this runs for every request a list reaches.
    """
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError):
        try:
            packed = socket.inet_pton(socket.AF_INET6, address.removeprefix("IPv6:"))
        except (OSError, ValueError):
            return None
        if not packed.startswith(_V4_MAPPED):
            return ".".join(reversed(packed.hex()))
        packed = packed[12:]
    return f"{packed[3]}.{packed[2]}.{packed[1]}.{packed[0]}"


def subject(dns_list: DnsList, request: PolicyRequest) -> str:
    """The attribute's value the list is asked about, as sent (for the reply)."""
    return _subject(dns_list.query, request)


def _subject(query: str, request: PolicyRequest) -> str:
    if query == "sender_domain":
        sender = request.get("sender")
        return sender.rpartition("@")[2] if "@" in sender else ""
    return request.get(query)


def fact_name(dns_list: DnsList, request: PolicyRequest) -> str | None:
    """``dns:ZONE:PREFIX`` for this request, or None when there is nothing to ask."""
    prefix = query_prefix(dns_list.query, subject(dns_list, request))
    if prefix is None or len(prefix) + len(dns_list.zone) + 1 > 253:
        return None
    return f"{PREFIX}:{dns_list.zone}:{prefix}"


def query_prefix(query: str, value: str) -> str | None:
    """What goes before the zone: the reversed address, or the domain; None: nothing to ask."""
    if query == "client_address":
        return reversed_address(value)
    prefix = value.lower().rstrip(".")
    if prefix == "unknown" or not is_domain(prefix) or _is_address(prefix):
        return None
    return prefix


def _is_address(name: str) -> bool:
    """A HELO or name that is an IPv4 literal (an IPv6 one is no domain already)."""
    return name.replace(".", "").isdigit()


def state(dns_list: DnsList, answer: object) -> str:
    """``listed``, ``unlisted`` or ``failed``: what one list makes of one answer."""
    if not isinstance(answer, DnsAnswer):
        return "unlisted"  # nothing was asked (no address, no domain)
    if answer.failure or answer_problem(answer.addresses):
        return "failed"
    return "listed" if dns_list.counts(answer.addresses) else "unlisted"


def counts_as_listed(dns_list: DnsList, found: str) -> bool:
    """Listed, with a failed lookup counting as the list's ``on_failure`` says."""
    return found == "listed" or (found == "failed" and dns_list.on_failure == "listed")


def reply_values(dns_list: DnsList, request: PolicyRequest, answer: object) -> dict[str, str]:
    """The placeholders of a listing: zone, TXT text, and what was looked up."""
    text = answer.text if isinstance(answer, DnsAnswer) else ""
    return {
        "dnsbl_zone": dns_list.zone,
        "dnsbl_text": text,
        "dnsbl_reason": f"; {text}" if text else "",
        "dnsbl_what": f"{_CLASS[dns_list.query]} [{subject(dns_list, request)}]",
    }


class _LastRequest:
    """The fact names of some lists for the last request seen.

    A request whose answers are not cached yet is walked twice (to find them
    missing, then to decide with them); the names are worked out once, and
    lists asking about the same attribute share its prefix.
    """

    __slots__ = ("asked", "names", "request")

    def __init__(self, lists: tuple[DnsList, ...]) -> None:
        # (query, "dns:ZONE:", room for the prefix) per list, made once.
        self.asked = tuple((d.query, f"{PREFIX}:{d.zone}:", 252 - len(d.zone)) for d in lists)
        self.request: PolicyRequest | None = None
        self.names: tuple[str | None, ...] = ()

    def of(self, request: PolicyRequest) -> tuple[str | None, ...]:
        if request is self.request:
            return self.names
        prefixes: dict[str, str | None] = {}
        names: list[str | None] = []
        for query, head, room in self.asked:
            if query in prefixes:
                prefix = prefixes[query]
            else:
                prefix = prefixes[query] = query_prefix(query, _subject(query, request))
            names.append(head + prefix if prefix is not None and len(prefix) <= room else None)
        self.request, self.names = request, tuple(names)
        return self.names

    def answers(self, request: PolicyRequest, facts: Mapping[str, object]) -> list[object]:
        return [facts[name] if name else None for name in self.of(request)]


@dataclass(frozen=True, slots=True)
class ListCheck:
    """``dnsbl = ["zen", "dbl"]``: listed on one of them (or unlisted on all, or failed)."""

    lists: tuple[DnsList, ...]
    mode: str = "listed"
    _last: _LastRequest = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_last", _LastRequest(self.lists))

    @property
    def text(self) -> str:
        return f"dnsbl {self.mode} {'|'.join(d.name for d in self.lists)}"

    def verdict(
        self,
        request: PolicyRequest,
        facts: Mapping[str, object],
        now: float,  # noqa: ARG002 - answers are timeless once gathered
    ) -> Verdict:
        answers = self._last.answers(request, facts)
        states = [state(d, a) for d, a in zip(self.lists, answers, strict=True)]
        note = ", ".join(f"{d.name} {s}" for d, s in zip(self.lists, states, strict=True))
        if self.mode == "failed":
            return Verdict("failed" in states, note=note)
        hits = [
            i
            for i, (d, s) in enumerate(zip(self.lists, states, strict=True))
            if counts_as_listed(d, s)
        ]
        if self.mode == "unlisted":
            return Verdict(not hits, note=note)
        if not hits:
            return Verdict(holds=False, note=note)
        first = hits[0]
        return Verdict(
            holds=True,
            values=reply_values(self.lists[first], request, answers[first]),
            note=note,
        )


@dataclass(frozen=True, slots=True)
class ScoreCheck:
    """``dnsbl_score = { ge = 3 }``: the weights of the lists that list this request, summed."""

    lists: tuple[DnsList, ...]
    tests: tuple[tuple[str, int], ...]
    _last: _LastRequest = field(init=False, repr=False, compare=False)
    # The verdict when no list lists the request, made once: the common case.
    _unlisted: Verdict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_last", _LastRequest(self.lists))
        holds = all(_OPS[op](0, limit) for op, limit in self.tests)
        values = MappingProxyType({"dnsbl_score": "0"}) if holds else NO_VALUES
        object.__setattr__(self, "_unlisted", Verdict(holds, values=values, note="score 0"))

    @property
    def text(self) -> str:
        return " and ".join(f"dnsbl_score {COMPARISONS[op]} {n}" for op, n in self.tests)

    def verdict(
        self,
        request: PolicyRequest,
        facts: Mapping[str, object],
        now: float,  # noqa: ARG002
    ) -> Verdict:
        answers = self._last.answers(request, facts)
        # Counted in C (identity first): an answer equal to NOT_LISTED lists nothing.
        if answers.count(NOT_LISTED) + answers.count(None) == len(answers):
            return self._unlisted
        hits = [
            (d, a)
            for d, a in zip(self.lists, answers, strict=True)
            if a is not None and counts_as_listed(d, state(d, a))
        ]
        if not hits:
            return self._unlisted
        score = sum(d.weight for d, _ in hits)
        note = f"score {score}" + "".join(f", {d.name} {d.weight:+d}" for d, _ in hits)
        return self._verdict(score, note, max(hits, key=lambda hit: hit[0].weight), request)

    def _verdict(
        self,
        score: int,
        note: str,
        top: tuple[DnsList, object] | None,
        request: PolicyRequest,
    ) -> Verdict:
        for op, limit in self.tests:
            if not _OPS[op](score, limit):
                return Verdict(holds=False, note=note)
        values = {"dnsbl_score": str(score)}
        if top is not None and top[0].weight > 0:
            values |= reply_values(top[0], request, top[1])
        return Verdict(holds=True, values=values, note=note)


def _lists(ctx: Context) -> Mapping[str, DnsList]:
    """The configured lists; the loader reports the table's own problems."""
    return parse_dns(ctx.doc.get("dns"), 60.0, Problems("")).lists


def _named(value: Any, place: str, ctx: Context) -> tuple[DnsList, ...] | None:
    names = [value] if isinstance(value, str) else value
    known = _lists(ctx)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        ctx.error(place, f"must be a list name or a list of names from [dns.lists], not {value!r}")
        return None
    missing = [n for n in names if n not in known]
    for name in missing:
        hint = suggest(name, known) or (
            f"; defined: {', '.join(sorted(known))}" if known else "; no [dns.lists] defined"
        )
        ctx.error(place, f"no DNS list named {name!r}{hint}")
    return None if missing else tuple(known[n] for n in names)


def compile_listed(value: Any, place: str, ctx: Context) -> ListCheck | None:
    """``dnsbl = "zen"``, ``["zen", "dbl"]``, ``{ unlisted = "dnswl" }``, ``{ failed = "zen" }``."""
    mode = "listed"
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in MODES:
            ctx.error(place, f"a table takes exactly one of {', '.join(MODES)}")
            return None
        mode, value = next(iter(value.items()))
        place = f"{place}.{mode}"
    lists = _named(value, place, ctx)
    return None if lists is None else ListCheck(lists, mode)


def compile_score(value: Any, place: str, ctx: Context) -> ScoreCheck | None:
    """``dnsbl_score = { ge = 3 }``, optionally ``lists = [...]`` (default: every list)."""
    if not isinstance(value, dict) or not value.keys() - {"lists"}:
        ctx.error(place, "must be a table of comparisons like { ge = 3 }")
        return None
    tests = []
    for op, limit in value.items():
        if op == "lists":
            continue
        if op not in _OPS or isinstance(limit, bool) or not isinstance(limit, int):
            hint = suggest(op, _OPS) if op not in _OPS else ""
            ctx.error(
                f"{place}.{op}", f"must be one of {', '.join(_OPS)} with a whole number{hint}"
            )
            return None
        tests.append((op, limit))
    lists = _named(value["lists"], f"{place}.lists", ctx) if "lists" in value else None
    if lists is None and "lists" in value:
        return None
    chosen = lists or tuple(_lists(ctx).values())
    if not chosen:
        ctx.error(place, "no [dns.lists] defined to score")
        return None
    return ScoreCheck(chosen, tuple(tests))


__all__ = [
    "NOT_LISTED",
    "PREFIX",
    "DnsAnswer",
    "ListCheck",
    "ScoreCheck",
    "compile_listed",
    "compile_score",
    "fact_name",
    "reversed_address",
    "state",
]
