"""The ``limit`` fact provider on Redis, for limits shared by several MX hosts.

Each fact costs one round trip: the `CHECK` script reads the counters and
reservations and reserves for the message when it fits
(`postgate.state.limit_scripts`), atomically, so two hosts never both
accept the last message. `peek` never answers (the fact needs I/O), so a
stateful request takes the answer step's Deferred path under
``daemon.deadline``. When Redis is down or late, the check's configured
outcome stands in (`unavailable`: nothing counted, so limits fail open),
and the outage is logged once by `postgate.daemon.redis`. Effects: the
reservation was made by the check already; END-OF-MESSAGE charges with
`CHARGE`; a new transaction of a session ends the previous message's holds
with `RELEASE`, and holds left behind expire by themselves.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Final

from postgate.rules.limits import Breach, Charge, LimitCheck, Reserve
from postgate.rules.model import ABSENT
from postgate.rules.program import walk
from postgate.state.limit_facts import LimitFacts, session_of
from postgate.state.limit_scripts import need_rule, view_of

if TYPE_CHECKING:
    from postgate.config.load import Config
    from postgate.daemon.redis import Redis
    from postgate.rules.model import Effect
    from postgate.state.limit_facts import Log
    from postgate.wire.codec import PolicyRequest

RESERVING: Final = frozenset({"RCPT", "DATA"})
MAX_SESSIONS: Final = 100_000  # sessions remembered for releasing; the oldest go first


def limit_checks(config: Config) -> dict[str, LimitCheck]:
    """Each limit rule's check, by rule id: what `CHECK` must be told."""
    found: dict[str, LimitCheck] = {}
    for node in walk(config.ruleset.nodes):
        for check in getattr(node, "checks", ()):
            if isinstance(check, LimitCheck):
                found[check.rule] = check
    return found


class RedisLimitFacts(LimitFacts):
    """`answer.FactProvider` for ``limit:`` facts kept in Redis."""

    def __init__(self, redis: Redis, config: Config, timeout: float, log: Log) -> None:
        super().__init__(log=log)
        self.redis = redis
        self.checks = limit_checks(config)
        self.timeout = timeout
        # Postfix's instance is unique on one host only: this daemon's id
        # makes it unique in a Redis shared by several.
        self.node = secrets.token_hex(4)
        self.sessions: dict[str, str] = {}

    def reconfigure(self, config: Config, timeout: float) -> None:
        self.checks = limit_checks(config)
        self.timeout = timeout

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:  # noqa: ARG002
        return ABSENT  # always through Redis

    async def fetch(self, name: str, request: PolicyRequest, now: float) -> object:
        _, rule, key = name.split(":", 2)
        check = self.checks[rule]  # a fact for a rule not in the config: a bug
        instance = request.get("instance")
        if instance:
            self._session_seen(request, instance)
        stage = request.get("protocol_state").upper()
        mode, n = need_rule(check, request)
        spans = check.seconds
        prefix = self.redis.settings.prefix
        keys = [f"{prefix}limit-res:{rule}:{key}", f"{prefix}limit-flight:{self._message(request)}"]
        keys += [f"{prefix}limit:{rule}:{seconds}:{key}" for seconds in spans]
        reserve = "1" if instance and key and stage in RESERVING else "0"
        args: list[object] = [repr(now), self._message(request), repr(self.timeout), mode, n]
        args += [reserve, f"{rule}|{key}", rule]
        for window in check.windows:
            args += [window.seconds, window.limit]
        return view_of(await self.redis.run("limit_check", keys, args), spans)

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:
        value = effect.value
        if isinstance(value, Reserve):  # made by the check, atomically
            self._recovered(value.rule, value.key)
        elif isinstance(value, Charge):
            args: list[object] = [self.redis.settings.prefix, repr(now), self._message(request)]
            args += [value.rule, len(value.windows), *value.windows]
            for key, weight in value.charges:
                args += [key, weight]
            self.redis.run("limit_charge", [], args).addErrback(lambda _: None)
            for key, _ in value.charges:
                self._recovered(value.rule, key)
        elif isinstance(value, Breach):
            self._exceeded(value)

    def status(self) -> dict[str, object]:
        redis = self.redis
        return {
            "backend": "redis",
            "redis": redis.settings.address,
            "connected": redis.connected,
            "calls": redis.calls,
            "errors": redis.errors,
        }

    def _message(self, request: PolicyRequest) -> str:
        return f"{self.node}.{request.get('instance')}"

    def _session_seen(self, request: PolicyRequest, instance: str) -> None:
        """A new transaction of a session ends the previous message, uncharged."""
        session = session_of(request)
        previous = self.sessions.pop(session, None)
        if previous is not None and previous != instance:
            message = f"{self.node}.{previous}"
            self.redis.run("limit_release", [], [self.redis.settings.prefix, message]).addErrback(
                lambda _: None
            )
        if len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        self.sessions[session] = instance


__all__ = ["RedisLimitFacts", "limit_checks"]
