"""The reference ruleset restated in plain Python, as the benchmark's oracle.

The benchmark checks every answer a server gives. If the expected answers
came from postgate's own engine, a bug in the engine would also be in the
expectation and the check would prove nothing; so this module restates the
15 rules from the reference ruleset's description (the numbered comments of
conf/examples/reference.toml) alone, with none of postgate's code (no shared
list loader, matcher or network set). postfwd, a third implementation, must
agree with it on the whole corpus, which checks this file in turn.

Semantics taken from that description and docs/rules.md: attribute names
as Postfix sends them; domain, address, HELO and hostname comparisons
case-insensitive; a missing or non-numeric number counts as 0; networks also
match IPv4-mapped IPv6 (docs/rules.md, Lists). Where the description leaves
a choice open, the corpus stays clear of it: `domain_hazards` rejects
requests whose answer would depend on whether a domain list also matches
subdomains, and fingerprints are always written as Postfix writes them
(upper-case hex with colons) in both the list and the requests, so case and
colon handling never decide an answer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

SIZE_LIMIT: Final = 10485760
MAX_RECIPIENTS: Final = 50
MIN_KEYSIZE: Final = 128
MYNETWORKS: Final = ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
BARE_IP: Final = re.compile(r"^\d+\.\d+\.\d+\.\d+$", re.ASCII)
DYNAMIC: Final = re.compile(
    r"(^|[.-])(dyn|dynamic|dsl|adsl|ppp|pool|dhcp|cable)[0-9]*[.-]", re.IGNORECASE
)
LIST_FILES: Final = {
    "local_domains": "local-domains.txt",
    "sender_blocklist": "sender-blocklist.txt",
    "client_blocklist": "client-blocklist.txt",
    "spamtraps": "spamtraps.txt",
    "trusted_certs": "trusted-certs.txt",
}

# The exact reply texts, in rule order; rule 8 is the
# group's own DUNNO for requests the group does not apply to.
ACTIONS: Final = {
    1: "552 5.3.4 Message size exceeds fixed limit",
    2: "OK",
    3: "554 5.7.1 Client host rejected: listed in local blocklist",
    4: "554 5.7.1 Sender address rejected: domain is blocklisted",
    5: "530 5.7.0 Must issue a STARTTLS command first",
    6: "452 4.5.3 Error: too many recipients",
    7: "554 5.7.1 Recipient address rejected: spamtrap",
    8: "DUNNO",
    9: "554 5.7.1 Helo command rejected: localhost is not a valid HELO",
    10: "554 5.7.1 Helo command rejected: bare IP address",
    11: "450 4.7.25 Client host rejected: cannot find your hostname",
    12: "554 5.7.1 Client host rejected: dynamic address, use your provider relay",
    13: "554 5.7.1 Sender address rejected: not logged in",
    14: "DUNNO",
    15: "554 5.7.1 Relay access denied",
}


class IPv4Networks:
    """IPv4 networks grouped by prefix length: one set probe per length."""

    __slots__ = ("_by_length",)

    def __init__(self, networks: Iterable[str]) -> None:
        by_length: dict[int, set[int]] = {}
        for text in networks:
            net = ipaddress.IPv4Network(text, strict=False)
            by_length.setdefault(net.prefixlen, set()).add(int(net.network_address))
        self._by_length = sorted(by_length.items())

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is None:
                return False  # an IPv4 network cannot contain a plain IPv6 address
            ip = ip.ipv4_mapped  # networks also match IPv4-mapped IPv6 (docs/rules.md, Lists)
        value = int(ip)
        for length, starts in self._by_length:
            if (value >> (32 - length) << (32 - length)) in starts:
                return True
        return False


@dataclass(frozen=True, slots=True)
class Lists:
    local_domains: frozenset[str]
    sender_blocklist: frozenset[str]
    client_blocklist: IPv4Networks
    spamtraps: frozenset[str]
    trusted_certs: frozenset[str]


@dataclass(frozen=True, slots=True)
class Answer:
    rule: int
    action: str


def read_entries(path: Path) -> list[str]:
    """One entry per line; `#` starts a comment (no entry of these five lists contains one)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def load_lists(directory: Path) -> Lists:
    """Read the five list files exactly as written for the servers."""

    def lowered(key: str) -> frozenset[str]:
        return frozenset(e.lower() for e in read_entries(directory / LIST_FILES[key]))

    return Lists(
        local_domains=lowered("local_domains"),
        sender_blocklist=lowered("sender_blocklist"),
        client_blocklist=IPv4Networks(read_entries(directory / LIST_FILES["client_blocklist"])),
        spamtraps=lowered("spamtraps"),
        trusted_certs=frozenset(read_entries(directory / LIST_FILES["trusted_certs"])),
    )


def number(attrs: Mapping[str, str], name: str) -> int:
    value = attrs.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else 0


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def in_mynetworks(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in MYNETWORKS)


def decide(attrs: Mapping[str, str], lists: Lists) -> Answer:
    """The first of the 15 rules that matches decides."""
    rule = _first_rules(attrs, lists) or _group_rules(attrs, lists)
    return Answer(rule, ACTIONS[rule])


def _first_rules(attrs: Mapping[str, str], lists: Lists) -> int:
    state = attrs.get("protocol_state", "")
    checks = (
        number(attrs, "size") > SIZE_LIMIT,
        attrs.get("ccert_fingerprint", "") in lists.trusted_certs,
        attrs.get("client_address", "") in lists.client_blocklist,
        domain_of(attrs.get("sender", "")) in lists.sender_blocklist,
        attrs.get("sasl_username", "") != "" and number(attrs, "encryption_keysize") < MIN_KEYSIZE,
        state == "DATA" and number(attrs, "recipient_count") > MAX_RECIPIENTS,
        state == "RCPT" and attrs.get("recipient", "").lower() in lists.spamtraps,
    )
    return next((index for index, hit in enumerate(checks, start=1) if hit), 0)


def _group_rules(attrs: Mapping[str, str], lists: Lists) -> int:
    outside = (
        attrs.get("protocol_state", "") == "RCPT"
        and not in_mynetworks(attrs.get("client_address", ""))
        and attrs.get("sasl_username", "") == ""
    )
    if not outside:
        return 8
    helo = attrs.get("helo_name", "")
    client_name = attrs.get("client_name", "")
    checks = (
        helo.lower() == "localhost",
        BARE_IP.search(helo) is not None,
        client_name.lower() == "unknown"
        and attrs.get("reverse_client_name", "").lower() == "unknown",
        DYNAMIC.search(client_name) is not None,
        domain_of(attrs.get("sender", "")) in lists.local_domains,
        domain_of(attrs.get("recipient", "")) in lists.local_domains,
    )
    return next((index for index, hit in enumerate(checks, start=9) if hit), 15)


def domain_hazards(attrs: Mapping[str, str], lists: Lists) -> list[str]:
    """Domains whose membership would differ if domain lists matched subdomains."""
    return [
        f"{name} domain {domain}"
        for name in ("sender", "recipient")
        for domain in (domain_of(attrs.get(name, "")),)
        for listed in (lists.local_domains, lists.sender_blocklist)
        if domain not in listed and any(parent in listed for parent in _parents(domain))
    ]


def _parents(domain: str) -> list[str]:
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]
