"""IP networks as hash sets per prefix length, and fast address parsing.

A network list answers "is this address inside any entry" with at most one
set lookup per prefix length that occurs in the list (33 for IPv4, 129 for
IPv6 in the worst case, a handful in practice), never a scan of the entries.
Addresses are parsed with ``inet_pton`` because ``ipaddress`` objects are
far slower to build (docs/performance.md, Large lists), which matters at
100,000 entries on load and on every request. IPv4-mapped IPv6 addresses
(``::ffff:a.b.c.d``) are folded to IPv4 on both sides, so an IPv4 entry
matches however the client is written.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Final, NamedTuple

_MAPPED: Final = 0xFFFF  # the ::ffff:0:0/96 prefix, shifted down by 32 bits
_BITS: Final = {4: 32, 6: 128}

Address = tuple[int, int]  # (IP version, integer value)


def parse_address(text: str) -> Address | None:
    """Return ``(version, value)`` for an IP address, or None for anything else."""
    try:
        if ":" in text:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
            if value >> 32 == _MAPPED:
                return 4, value & 0xFFFFFFFF
            return 6, value
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


class Network(NamedTuple):
    """One entry: ``value`` has its host bits cleared.

    A NamedTuple rather than a frozen dataclass: building 100,000 of them is
    a measurable part of loading a big list.
    """

    version: int
    value: int
    prefix: int

    def __str__(self) -> str:
        kind = ipaddress.IPv4Network if self.version == 4 else ipaddress.IPv6Network
        return str(kind((self.value, self.prefix)))


def parse_network(text: str) -> tuple[Network | None, str | None]:
    """Parse ``addr`` or ``addr/len``; return the network and a problem, if any.

    A problem with a network is a warning (host bits set, as Postfix warns
    for ``mynetworks``); a problem without one is an error.
    """
    addr_text, slash, prefix_text = text.partition("/")
    address = parse_address(addr_text)
    if address is None:
        return None, f"{text!r} is not a network (expected an IP address or CIDR)"
    version, value = address
    bits = _BITS[version]
    if ":" in addr_text and version == 4:
        bits, prefix_shift = 32, 96
    else:
        prefix_shift = 0
    prefix = _prefix(prefix_text, bits + prefix_shift) if slash else bits + prefix_shift
    if prefix is None or prefix < prefix_shift:
        return None, f"{text!r} is not a network (prefix length out of range)"
    prefix -= prefix_shift
    mask = _mask(version, prefix)
    net = Network(version, value & mask, prefix)
    if value & ~mask:
        return net, f"{text!r} has host bits set; using {net}"
    return net, None


def _prefix(text: str, bits: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        return None
    prefix = int(text)
    return prefix if prefix <= bits else None


def _make_mask(bits: int, prefix: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)


_MASKS: Final = {v: tuple(_make_mask(b, p) for p in range(b + 1)) for v, b in _BITS.items()}


def _mask(version: int, prefix: int) -> int:
    return _MASKS[version][prefix]


@dataclass(slots=True)
class NetworkSet:
    """Networks grouped by (version, prefix length) into sets of masked values."""

    _tables: dict[int, list[tuple[int, frozenset[int]]]] = field(default_factory=dict)
    size: int = 0

    @classmethod
    def build(cls, networks: list[Network]) -> NetworkSet:
        groups: dict[tuple[int, int], set[int]] = {}
        for net in networks:
            groups.setdefault((net.version, net.prefix), set()).add(net.value)
        tables: dict[int, list[tuple[int, frozenset[int]]]] = {4: [], 6: []}
        for (version, prefix), values in sorted(groups.items(), reverse=True):
            tables[version].append((_mask(version, prefix), frozenset(values)))
        return cls(tables, len(set(networks)))

    def __contains__(self, address: Address | None) -> bool:
        if address is None:
            return False
        version, value = address
        for mask, values in self._tables.get(version, ()):  # noqa: SIM110 - hot path, no generator
            if value & mask in values:
                return True
        return False

    def canonical(self) -> list[str]:
        """Every network as ``version:value/prefix`` in hex, sorted; for digests."""
        out: list[str] = []
        for version, table in sorted(self._tables.items()):
            for mask, values in table:
                prefix = mask.bit_count()
                out.extend(f"{version}:{value:x}/{prefix}" for value in sorted(values))
        return out
