"""The daemon's `FactSource`: providers asked in parallel under the per-request deadline.

A fact's name is ``provider:detail`` (``limit:HOURLY:alice``,
``dnsbl:zen.example``); the part before the colon picks the provider. Each
provider answers with a Deferred or a coroutine; whatever has not answered
when the budget runs out, or failed, takes the provider's configured outcome
(``unavailable``). A provider that fails is logged once when its outage
starts (``fact_unavailable``) and once when it answers again
(``fact_recovered``), never once per request. Effects go back to the
provider that named them, after the decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed

from postgate.answer import Local
from postgate.rules.model import ABSENT

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

    from postgate.answer import FactProvider
    from postgate.rules.model import Effect
    from postgate.wire.codec import PolicyRequest

log = structlog.get_logger("postgate")


class Gatherer:
    """Asks providers for facts, each under the same timer, and routes effects.

    What a provider holds in memory (`FactProvider.peek`) is taken at once;
    `peek` lets the answer step decide without a Deferred when all is at hand.
    """

    def __init__(self, providers: Mapping[str, FactProvider], reactor: IReactorTime) -> None:
        self._providers = providers
        self._reactor = reactor
        self._down: set[str] = set()
        # The answer step's `peek`: a bound method, not one more call around it.
        self.peek = Local(providers, strict=True).peek

    def gather(
        self, names: frozenset[str], request: PolicyRequest, now: float, budget: float
    ) -> Deferred[dict[str, object]]:
        asked = [self._one(name, request, now, budget) for name in sorted(names)]
        return gatherResults(asked, consumeErrors=True).addCallback(dict)

    def apply(self, effects: tuple[Effect, ...], request: PolicyRequest, now: float) -> None:
        for effect in effects:
            self._providers[effect.fact.partition(":")[0]].apply(effect, request, now)

    def _one(
        self, name: str, request: PolicyRequest, now: float, budget: float
    ) -> Deferred[tuple[str, object]]:
        kind = name.partition(":")[0]
        provider = self._providers[kind]  # a name no provider owns is a rule bug
        held = provider.peek(name, request, now)
        if held is not ABSENT:
            return succeed((name, held))
        asked: Deferred[object] = ensureDeferred(provider.fetch(name, request, now))  # type: ignore[arg-type]
        asked.addTimeout(budget, self._reactor)
        return asked.addCallbacks(
            self._answered, self._failed, callbackArgs=(kind, name), errbackArgs=(kind, name)
        )

    def _answered(self, value: object, kind: str, name: str) -> tuple[str, object]:
        if kind in self._down:
            self._down.discard(kind)
            log.info("fact_recovered", provider=kind)
        return name, value

    def _failed(self, failure: Failure, kind: str, name: str) -> tuple[str, object]:
        if kind not in self._down:
            self._down.add(kind)
            log.warning("fact_unavailable", provider=kind, fact=name, reason=repr(failure.value))
        return name, self._providers[kind].unavailable(name)


__all__ = ["Gatherer"]
