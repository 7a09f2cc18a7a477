"""One request as the rules see it: raw, folded, numeric and IP views.

Derived values (lower-cased names, the domain of an address, parsed IPs) are
computed on first use and kept for the rest of that request, so a ruleset
that tests ``sender_domain`` in ten rules splits the sender once. Nothing here
can raise on request content: every view has a defined value for garbage
(``""``, ``0`` or no address), which is what keeps `Ruleset.decide` total.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from postgate.rules.attributes import DERIVED, DOMAIN, FINGERPRINT, FOLDED
from postgate.rules.networks import Address, parse_address

if TYPE_CHECKING:
    from postgate.protocol import PolicyRequest

# A longer digit string is no real count or size; it still compares as huge.
MAX_DIGITS: Final = 30
HUGE: Final = 10**MAX_DIGITS


def fold(name: str, value: str) -> str:
    """The comparison key of ``value`` for attribute ``name`` (also for rule values)."""
    if name not in FOLDED:
        return value
    value = value.lower()
    if name in DOMAIN:
        return value.removesuffix(".")
    if name in FINGERPRINT:
        return value.replace(":", "")
    return value


def number(text: str) -> int:
    """Postfix numbers; missing or non-numeric counts as 0 (issue 4 item 6)."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return 0
    return int(text) if len(text) <= MAX_DIGITS else HUGE


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) split at the last ``@``; no ``@`` means no domain."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def plain(name: str) -> bool:
    """Whether the value as sent is also its comparison key (no fold, not derived).

    Conditions on such attributes read ``Facts.raw`` directly, skipping a
    method call and a cache on the per-request path.
    """
    return name not in FOLDED and name not in DERIVED


class Facts:
    """Lazily derived views of one request, each computed at most once."""

    __slots__ = ("_addresses", "_keys", "_numbers", "_values", "raw", "request")

    def __init__(self, request: PolicyRequest) -> None:
        self.request = request
        # Conditions on plain attributes read this dict directly (see `plain`).
        self.raw = request.raw
        self._values: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._numbers: dict[str, int] = {}
        self._addresses: dict[str, Address | None] = {}

    def value(self, name: str) -> str:
        """The attribute as sent; derived names computed from their base."""
        base = DERIVED.get(name)
        if base is None:
            return self.raw.get(name, "")
        cached = self._values.get(name)
        if cached is None:
            local, domain = split_address(self.raw.get(base, ""))
            cached = local if name.endswith("_localpart") else domain
            self._values[name] = cached
        return cached

    def key(self, name: str) -> str:
        """The value folded for comparison (see `fold`)."""
        cached = self._keys.get(name)
        if cached is None:
            cached = self._keys[name] = fold(name, self.value(name))
        return cached

    def number(self, name: str) -> int:
        cached = self._numbers.get(name)
        if cached is None:
            cached = self._numbers[name] = number(self.value(name))
        return cached

    def address(self, name: str) -> Address | None:
        if name not in self._addresses:
            self._addresses[name] = parse_address(self.value(name))
        return self._addresses[name]

    def present(self, name: str) -> bool:
        """Whether Postfix sent the attribute (derived: whether it sent the base)."""
        return DERIVED.get(name, name) in self.request


__all__ = ["Facts", "fold", "number", "plain", "split_address"]
