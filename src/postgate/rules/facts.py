"""How the rules read a value: folded for comparison, as a number, split.

`postgate.rules.program` writes these views into the function it generates
(it spells `fold` out per attribute, and tests keep the two equal); rule
values are folded here at load. Nothing here can raise on request content:
every view has a defined value for garbage (``""`` or ``0``), which is what
keeps `Ruleset.decide` total.
"""

from __future__ import annotations

from typing import Final

from postgate.rules.attributes import DOMAIN, FINGERPRINT, FOLDED

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
    """Postfix numbers; missing or non-numeric counts as 0 (docs/rules.md, Operator tables)."""
    if text.isdigit() and text.isascii() and len(text) <= MAX_DIGITS:
        return int(text)  # what Postfix sends: decided in three C calls
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return 0
    return int(text) if len(text) <= MAX_DIGITS else HUGE


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) split at the last ``@``; no ``@`` means no domain."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


__all__ = ["fold", "number", "split_address"]
