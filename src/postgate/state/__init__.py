"""The state that rules keep between requests: counters and greylist entries.

`local_providers` gives the fact providers that need no reactor: what
``replay``, ``diff`` and ``test`` decide with on a recording's virtual clock,
and the embedded store the daemon keeps in memory. Backends that need I/O
(Redis) live with the daemon; see docs/architecture.md, Facts and effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postgate.rules.dnsbl import PREFIX as DNS
from postgate.state.dns import FixedAnswers

if TYPE_CHECKING:
    from postgate.answer import FactProvider
    from postgate.config.load import Config


def local_providers(config: Config) -> dict[str, FactProvider]:
    """One provider per kind of fact the config's checks read, held in memory."""
    providers: dict[str, FactProvider] = {}
    # DNS lists: the fixed [dns.answers] table stands in for the resolver.
    providers[DNS] = FixedAnswers(config.dns.answers)
    return providers


__all__ = ["local_providers"]
