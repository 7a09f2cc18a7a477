"""A set of domain names, optionally standing for every name below them too.

Shared by postgate's own lists (``subdomains = true``) and postgrey's
whitelist files, where a name always covers the names below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_DOMAIN: Final = 253  # octets in a domain name (RFC 1035, section 2.3.4)


@dataclass(frozen=True, slots=True)
class DomainSet:
    """Domain names; with ``subdomains`` also any name below one of them."""

    names: frozenset[str]
    subdomains: bool

    def __contains__(self, domain: str) -> bool:
        if domain in self.names:
            return True
        if not self.subdomains or len(domain) > MAX_DOMAIN:
            return False
        dot = domain.find(".")
        while dot >= 0:
            if domain[dot + 1 :] in self.names:
                return True
            dot = domain.find(".", dot + 1)
        return False

    @property
    def size(self) -> int:
        return len(self.names)

    def canonical(self) -> list[str]:
        return sorted(self.names)


__all__ = ["MAX_DOMAIN", "DomainSet"]
