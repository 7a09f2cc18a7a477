"""postgrey's whitelist files as postgate lists, read in postgrey's own format.

``type = "postgrey_clients"`` reads a ``whitelist_clients`` file: a host name
(that name and every name below it, tested on ``client_name``), an IPv4
address with trailing parts left off (``195.235.39`` is 195.235.39.0/24), an
address or a network in CIDR form (tested on ``client_address``), and
``/regex/`` (searched in ``client_name``). ``type = "postgrey_recipients"``
reads a ``whitelist_recipients`` file: ``domain`` (the recipient domain and
its subdomains), ``user@`` (that user, ``+extensions`` too, at any domain),
``user@domain`` (with extensions) and ``/regex/`` (searched in the whole
address). Comments start with ``#``, as in postgrey. Regexes go through the
same bounded check as every pattern (`postgate.rules.patterns`); one that
check refuses is left out with a warning on its line rather than run
(docs/rules.md, Greylisting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from postgate.rules.domains import DomainSet
from postgate.rules.networks import Network, NetworkSet, parse_address, parse_network
from postgate.rules.patterns import FLAGS, Pattern, PatternError, compile_pattern

if TYPE_CHECKING:
    from collections.abc import Iterable

CLIENTS: Final = "postgrey_clients"
RECIPIENTS: Final = "postgrey_recipients"
_REGEX: Final = re.compile(r"/(\S+)/")
_PARTIAL_V4: Final = re.compile(r"\d{1,3}(?:\.\d{1,3}){0,3}")


class Skipped(str):
    """A line kept out of the list, with the reason as a warning (not an error)."""

    __slots__ = ()


def _regex(source: str) -> tuple[object | None, str | None]:
    try:
        return compile_pattern(source), None
    except PatternError as exc:
        return Skipped(source), f"/{source}/ is left out: {exc}"


def _ip(text: str) -> tuple[object | None, str | None] | None:
    """An address, a CIDR network, or an IPv4 address with trailing parts left off."""
    if "/" in text or parse_address(text) is not None:
        return parse_network(text)
    if _PARTIAL_V4.fullmatch(text):
        parts = text.split(".")
        if all(int(p) <= 255 for p in parts):
            padded = ".".join(parts + ["0"] * (4 - len(parts)))
            return parse_network(f"{padded}/{8 * len(parts)}")
    return None


def client_entry(text: str) -> tuple[object | None, str | None]:
    """One line of a whitelist_clients file: ("name", n), a Pattern or a Network."""
    found = _REGEX.fullmatch(text)
    if found:
        return _regex(found.group(1))
    ip = _ip(text)
    if ip is not None:
        return ip
    return ("name", text.lower().removesuffix(".")), None


def recipient_entry(text: str) -> tuple[object | None, str | None]:
    """One line of a whitelist_recipients file: a Pattern or (kind, value)."""
    found = _REGEX.fullmatch(text)
    if found:
        return _regex(found.group(1))
    user, at, domain = text.lower().partition("@")
    if not at:
        return ("domain", user.removesuffix(".")), None
    if not domain:
        return ("user", user), None
    return ("address", f"{user}@{domain.removesuffix('.')}"), None


@dataclass(frozen=True, slots=True)
class PostgreyClients:
    """Names (with the names below them), patterns on names, and networks."""

    names: DomainSet
    patterns: tuple[Pattern, ...]
    networks: NetworkSet

    @property
    def size(self) -> int:
        return self.names.size + len(self.patterns) + self.networks.size

    def canonical(self) -> list[str]:
        shown = [p.source for p in self.patterns]
        return [*self.names.canonical(), *shown, *self.networks.canonical()]


@dataclass(frozen=True, slots=True)
class PostgreyRecipients:
    """``user@domain``, ``user@``, domains and patterns; ``+extensions`` do not count."""

    addresses: frozenset[str]
    users: frozenset[str]
    domains: DomainSet
    patterns: tuple[Pattern, ...]
    joined: tuple[Pattern, ...] = ()  # `combined(patterns)`, searched

    def __contains__(self, recipient: str) -> bool:
        local, at, domain = recipient.rpartition("@")
        if at:
            user = local.partition("+")[0]
            if f"{user}@{domain}" in self.addresses or user in self.users or domain in self.domains:
                return True
        return any(p.search(recipient) for p in self.joined)

    @property
    def size(self) -> int:
        return len(self.addresses) + len(self.users) + self.domains.size + len(self.patterns)

    def canonical(self) -> list[str]:
        users = sorted(f"{u}@" for u in self.users)
        shown = [p.source for p in self.patterns]
        return [*sorted(self.addresses), *users, *self.domains.canonical(), *shown]


def combined(patterns: tuple[Pattern, ...]) -> tuple[Pattern, ...]:
    """Checked patterns as one alternation: one search per value instead of one per line.

    Each part passed the bounded check alone, and an alternation at the top
    tries them one after the other, as separate searches would, so the
    whole stays bounded; groups are renumbered by ``re``, never referred to.
    """
    if len(patterns) < 2:
        return patterns
    source = "|".join(f"(?:{p.source})" for p in patterns)
    return (Pattern(source, re.compile(source, FLAGS)),)


def _named(values: Iterable[object], kind: str) -> frozenset[str]:
    return frozenset(
        str(v[1]) for v in values if isinstance(v, tuple) and len(v) == 2 and v[0] == kind
    )


def build(kind: str, values: list[object]) -> PostgreyClients | PostgreyRecipients:
    """The lookup for a postgrey list's parsed lines (skipped ones left out)."""
    patterns = tuple(v for v in values if isinstance(v, Pattern))
    if kind == CLIENTS:
        networks = NetworkSet.build([v for v in values if isinstance(v, Network)])
        return PostgreyClients(
            DomainSet(_named(values, "name"), subdomains=True), patterns, networks
        )
    domains = DomainSet(_named(values, "domain"), subdomains=True)
    addresses, users = _named(values, "address"), _named(values, "user")
    return PostgreyRecipients(addresses, users, domains, patterns, combined(patterns))


__all__ = [
    "CLIENTS",
    "RECIPIENTS",
    "PostgreyClients",
    "PostgreyRecipients",
    "Skipped",
    "build",
    "client_entry",
    "combined",
    "recipient_entry",
]
