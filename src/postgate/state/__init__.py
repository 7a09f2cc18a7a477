"""The state that rules keep between requests: counters and greylist entries.

`local_providers` gives the fact providers that need no reactor: what
``replay``, ``diff`` and ``test`` decide with on a recording's virtual clock,
and the embedded store the daemon keeps in memory. Backends that need I/O
(Redis) live with the daemon; see docs/architecture.md, Facts and effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postgate.state import greylist

if TYPE_CHECKING:
    from postgate.answer import FactProvider
    from postgate.config.load import Config


def local_providers(config: Config) -> dict[str, FactProvider]:  # noqa: ARG001 - one set for all
    """One provider per kind of fact a check can read, held in memory.

    Every kind is there whatever the rules say, so that a reload that adds a
    greylist rule finds its provider in the running daemon.
    """
    return {greylist.PREFIX: greylist.GreylistProvider()}


__all__ = ["local_providers"]
