"""The state that rules keep between requests: counters and greylist entries.

`local_providers` gives the fact providers that need no reactor: what
``replay``, ``diff`` and ``test`` decide with on a recording's virtual clock,
and the embedded store the daemon keeps in memory (persisted behind it by a
`postgate.state.disk.DiskStore` when one is given). Backends that need I/O
(Redis) live with the daemon; see docs/architecture.md, Facts and effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postgate.rules.dnsbl import PREFIX as DNS
from postgate.state import greylist
from postgate.state.dns import FixedAnswers
from postgate.state.limit_facts import LimitFacts
from postgate.state.limits import LimitStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from postgate.answer import FactProvider
    from postgate.config.load import Config
    from postgate.state.disk import DiskStore


def local_providers(
    config: Config,
    *,
    disk: DiskStore | None = None,
    log: Callable[..., None] | None = None,
    reservation_timeout: float = 900.0,
    now: float = 0.0,
) -> dict[str, FactProvider]:
    """One provider per kind of fact the config's checks read, held in memory.

    The daemon builds them once and keeps them across reloads (state is keyed
    by rule id, so a changed limit keeps its counts; greylist triplets are
    shared by every greylist rule, as postgrey's database is). A provider that
    persists has ``attach(disk, now)``: the daemon calls it with the shared
    `postgate.state.disk.DiskStore` once a ruleset reads state, and it loads
    its rows (its own kind) and writes behind from then on. ``disk`` here
    does the same at once, for tools and tests. Every kind is there whatever
    the rules say, so a reload that adds a greylist rule finds its provider.
    """
    store = LimitStore(disk, reservation_timeout)
    store.load(now)  # what the file holds that has not expired at ``now``
    limits = LimitFacts(store) if log is None else LimitFacts(store, log)
    grey = greylist.GreylistStore(disk)
    grey.load(now)
    # replay and test (no log) tally what greylisting delayed; the daemon does not.
    grey_facts = greylist.GreylistProvider(grey, tally=log is None)
    # DNS lists: the fixed [dns.answers] table stands in for the resolver
    # (the daemon replaces it with its own, `postgate.daemon.dns`).
    return {
        "limit": limits,
        greylist.PREFIX: grey_facts,
        DNS: FixedAnswers(config.dns.answers),
    }


__all__ = ["local_providers"]
