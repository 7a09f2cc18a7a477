"""The ``greylist`` fact provider on Redis: triplets shared by several MX hosts.

`fetch` reads the request's records in one round trip (`SEEN`); after the
decision, the effect runs `RECORD`, greylisting's step on the server,
atomically (`postgate.state.greylist_scripts`). `peek` never answers, so a
greylisted request takes the answer step's Deferred path under
``daemon.deadline``; when Redis fails, the rule's ``on_unavailable`` decides
(`unavailable`), and the outage is logged once by `postgate.daemon.redis`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postgate.rules.greylisting import UNAVAILABLE, Settings
from postgate.rules.model import ABSENT
from postgate.state.greylist import split_fact
from postgate.state.greylist_scripts import record_args, seen_of

if TYPE_CHECKING:
    from postgate.daemon.redis import Redis
    from postgate.rules.model import Effect
    from postgate.wire.codec import PolicyRequest


class RedisGreylist:
    """`answer.FactProvider` for ``greylist:`` facts kept in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.outcomes: dict[str, int] = {}  # new, early, passed, ...: for /metrics

    def _keys(self, name: str) -> list[str]:
        triplet, client = split_fact(name)
        prefix = self.redis.settings.prefix
        return [f"{prefix}grey:t:{triplet}", f"{prefix}grey:c:{client}"]

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:  # noqa: ARG002
        return ABSENT  # always through Redis

    async def fetch(self, name: str, request: PolicyRequest, now: float) -> object:  # noqa: ARG002
        return seen_of(await self.redis.run("grey_seen", self._keys(name), []))

    def unavailable(self, name: str) -> object:  # noqa: ARG002 - one outcome for all
        return UNAVAILABLE

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:  # noqa: ARG002
        if isinstance(effect.value, Settings):
            args = record_args(effect.value, now)
            recorded = self.redis.run("grey_record", self._keys(effect.fact), args)
            recorded.addCallbacks(self._count, lambda _: None)

    def _count(self, why: object) -> None:
        self.outcomes[str(why)] = self.outcomes.get(str(why), 0) + 1


__all__ = ["RedisGreylist"]
