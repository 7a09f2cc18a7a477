"""Greylisting's keys: a request to its triplet and its client, as stable as retries need.

A retry must find the entry its first attempt left, although senders change
what they can: the address of a sending pool, the per-message tags in the
envelope sender. So the client is its network (the /24 of an IPv4 address,
the /64 of an IPv6 one), the sender is normalised the way postgrey's users
know (BATV ``prvs=`` tags dropped, ``+extensions`` dropped, numbers of VERP
addresses replaced by ``#``; SRS hashes and timestamps replaced by ``#``),
and, for pool-aware rules, a client whose verified reverse DNS name is in
the sender's own registered domain is keyed on that domain alone
(docs/rules.md, Greylisting).
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING, Final, NamedTuple

from postgate.rules.networks import Network, parse_address

if TYPE_CHECKING:
    from postgate.rules.greylisting import Settings
    from postgate.wire.codec import PolicyRequest

# Two-label public suffixes under which a registrant's domain has three
# labels (example.co.uk). A short built-in table, not the Public Suffix List:
# a suffix missing here makes a pool key one label too wide (docs/rules.md).
TWO_LEVEL_SUFFIXES: Final = frozenset(
    f"{second}.{top}"
    for top, seconds in {
        "uk": ("co", "org", "ac", "gov", "ltd", "plc", "me", "net", "sch"),
        "au": ("com", "net", "org", "edu", "gov", "asn", "id"),
        "nz": ("co", "org", "net", "ac", "govt", "school"),
        "jp": ("co", "ne", "or", "ac", "ad", "go", "gr", "lg"),
        "br": ("com", "net", "org", "gov", "edu"),
        "za": ("co", "org", "net", "gov", "ac", "web"),
        "in": ("co", "net", "org", "gen", "firm", "ind", "ac", "gov"),
        "cn": ("com", "net", "org", "gov", "edu"),
        "kr": ("co", "ne", "or", "go", "ac", "re"),
        "il": ("co", "org", "net", "ac", "gov"),
        "mx": ("com", "org", "net", "gob", "edu"),
        "tr": ("com", "net", "org", "gov", "edu"),
        "tw": ("com", "net", "org", "gov", "edu"),
        "hk": ("com", "net", "org", "gov", "edu"),
        "sg": ("com", "net", "org", "gov", "edu"),
        "ar": ("com", "net", "org", "gob", "edu"),
        "ru": ("com", "net", "org"),
        "ua": ("com", "net", "org"),
        "pl": ("com", "net", "org"),
    }.items()
    for second in seconds
)

_SRS0: Final = re.compile(r"(?i)srs0[=+-][^=]*=[^=]*=(.*)")
_SRS1: Final = re.compile(r"(?i)srs1[=+-][^=]*=([^=]*)=+(?:[^=]*=){2}(.*)")
_TAG: Final = re.compile(r"[0-9a-z]{10}")
_NUMBER: Final = re.compile(r"\b\d+\b", re.ASCII)


class Keys(NamedTuple):
    """Where a request's greylisting state lives: its triplet and its client."""

    triplet: str  # "<client> <sender> <recipient>"
    client: str  # a network ("192.0.2.0/24") or a pool ("pool:example.com")


def network_of(address: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The client's network in CIDR form; anything that is not an address, as it is."""
    parsed = parse_address(address)
    if parsed is None:
        return address.lower() or "-"
    version, value = parsed
    if version == 4:  # the common case, without building an ipaddress object
        masked = value & (0xFFFFFFFF ^ ((1 << (32 - ipv4_prefix)) - 1))
        return f"{socket.inet_ntoa(masked.to_bytes(4, 'big'))}/{ipv4_prefix}"
    mask = ((1 << 128) - 1) ^ ((1 << (128 - ipv6_prefix)) - 1)
    return str(Network(version, value & mask, ipv6_prefix))


def _unbatv(local: str) -> str:
    """``prvs=tag=local`` (or the reversed ``prvs=local=tag`` some senders write) to ``local``."""
    if not local.startswith("prvs="):
        return local
    parts = local.split("=")
    while parts and not parts[-1]:
        parts.pop()  # trailing empty fields do not count, as in a split on '='
    if len(parts) != 3:
        return local
    first_tag, second_tag = _TAG.match(parts[1]), _TAG.match(parts[2])
    if second_tag and not first_tag:
        return parts[1]
    return parts[2]


def _unsrs(local: str) -> str | None:
    """An SRS address's local part with its hashes and timestamps as ``#``; None if not SRS."""
    found = _SRS1.fullmatch(local)
    if found:
        return f"srs1=#={found.group(1)}==#=#={found.group(2)}"
    found = _SRS0.fullmatch(local)
    if found:
        return f"srs0=#=#={found.group(1)}"
    return None


def normal_sender(sender: str) -> str:
    """The sender as greylisting keys it: lower case, per-message tags taken out."""
    if not sender:
        return "<>"
    local, at, domain = sender.lower().rpartition("@")
    if not at:
        return domain
    srs = _unsrs(local)
    if srs is not None:
        return f"{srs}@{domain}"
    local = _unbatv(local).partition("+")[0]
    return f"{_NUMBER.sub('#', local)}@{domain}"


def registered_domain(name: str) -> str:
    """The last two labels, three under a known two-label public suffix; "" for a bare label."""
    labels = name.lower().rstrip(".").split(".")
    if len(labels) < 2 or not all(labels):
        return ""
    take = 3 if ".".join(labels[-2:]) in TWO_LEVEL_SUFFIXES else 2
    return ".".join(labels[-take:]) if len(labels) >= take else ""


def pool_of(request: PolicyRequest) -> str:
    """The registered domain the client and the sender share; "" when they do not."""
    name = request.get("client_name")
    domain = request.get("sender").rpartition("@")[2]
    if not name or name == "unknown" or not domain:
        return ""
    own = registered_domain(domain)
    return own if own and registered_domain(name) == own else ""


def keys_of(request: PolicyRequest, settings: Settings) -> Keys:
    """The triplet and client keys for ``request`` under a rule's settings."""
    recipient = request.get("recipient").lower() or "<>"
    pool = pool_of(request) if settings.pool else ""
    if pool:
        domain = request.get("sender").rpartition("@")[2].lower()
        client = f"pool:{pool}"
        return Keys(f"{client} @{domain} {recipient}", client)
    net = network_of(request.get("client_address"), settings.ipv4_prefix, settings.ipv6_prefix)
    return Keys(f"{net} {normal_sender(request.get('sender'))} {recipient}", net)


__all__ = [
    "TWO_LEVEL_SUFFIXES",
    "Keys",
    "keys_of",
    "network_of",
    "normal_sender",
    "pool_of",
    "registered_domain",
]
