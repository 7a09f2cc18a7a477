"""The ``greylist`` rule key: ``greylist = true`` or ``greylist = { delay = "5m", ... }``.

The rule's other conditions choose who is greylisted; its check looks the
request's triplet up (`postgate.rules.triplets`), judges it with
`postgate.rules.greylisting.step` and holds (so the rule's action, by
default the named reply ``greylisted``, decides) when the attempt must be
deferred. Either way it asks for the attempt to be recorded, after the
decision. Settings and defaults: docs/rules.md, Greylisting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys
from postgate.rules.greylisting import DAY, Seen, Settings, step
from postgate.rules.model import Effect, Verdict
from postgate.rules.triplets import keys_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.rules.conditions import Context
    from postgate.wire.codec import PolicyRequest

KEY: Final = "greylist"
PREFIX: Final = "greylist"
DEFAULT_REPLY: Final = "greylisted"
SETTINGS: Final = (
    "delay",
    "retry_window",
    "lifetime",
    "ipv4_prefix",
    "ipv6_prefix",
    "auto_allowlist",
    "pool",
    "on_unavailable",
)
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_MAX_TIME: Final = 3650 * DAY
_NOT_AT_THIS_STAGE: Final = Verdict(holds=False, note="greylisting decides at RCPT only")


@dataclass(frozen=True, slots=True)
class Greylist:
    """One rule's greylisting: its settings, and how the trace and ``show`` name it."""

    settings: Settings
    last: list[Any] = field(default_factory=lambda: [None, ""], compare=False, repr=False)

    @property
    def text(self) -> str:
        s = self.settings
        pool = ", pool-aware" if s.pool else ""
        return f"greylist (delay {_seconds(s.delay)}{pool})"

    def fact(self, request: PolicyRequest) -> str:
        # Asked twice when the state is read through I/O (the walk that finds
        # it missing, the walk with it): the last request's name is kept.
        last = self.last
        if last[0] is request:
            return str(last[1])
        name = f"{PREFIX}:{keys_of(request, self.settings).triplet}"
        last[:] = [request, name]
        return name

    def verdict(self, request: PolicyRequest, facts: Mapping[str, object], now: float) -> Verdict:
        if request.get("protocol_state") != "RCPT":
            # A triplet needs its recipient: at DATA or END-OF-MESSAGE (wired
            # for limits, say) the mail was judged at RCPT already.
            return _NOT_AT_THIS_STAGE
        name = self.fact(request)
        seen = facts[name]
        if not isinstance(seen, Seen):  # the store could not be read: on_unavailable
            defer = self.settings.defer_unavailable
            values = {"retry": str(math.ceil(self.settings.delay))} if defer else {}
            return Verdict(holds=defer, values=values, note="greylist state unavailable")
        outcome = step(seen, now, self.settings)
        values = {"retry": str(math.ceil(outcome.wait))} if outcome.defer else {}
        note = (
            f"{outcome.why}, retry in {math.ceil(outcome.wait)} s" if outcome.defer else outcome.why
        )
        return Verdict(outcome.defer, (Effect(name, self.settings),), values, note)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def duration(value: Any) -> float | None:
    """Seconds from a number or a string like ``"300"``, ``"5m"``, ``"36h"``, ``"2d"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (found := _DURATION.fullmatch(value)):
        seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    else:
        return None
    return seconds if 0 <= seconds <= _MAX_TIME else None


def _time(table: Mapping[str, Any], key: str, default: float, place: str, ctx: Context) -> float:
    if key not in table:
        return default
    found = duration(table[key])
    if found is None:
        ctx.error(
            f"{place}.{key}",
            f'must be seconds or a duration like "5m", "36h", "2d" (up to 10 years), '
            f"not {table[key]!r}",
        )
        return default
    return found


def compile_greylist(value: Any, place: str, ctx: Context) -> Greylist | None:
    """``greylist = true`` (postgrey's defaults) or a table of settings; None if broken."""
    if value is True:
        return Greylist(Settings())
    if not isinstance(value, dict):
        ctx.error(place, f'must be true or a table like {{ delay = "5m" }}, not {value!r}')
        return None
    errors = len(ctx.problems.errors)
    check_keys(value, SETTINGS, place, ctx.problems)
    base = Settings()
    read = Values(value, place, ctx.problems)
    settings = Settings(
        delay=_time(value, "delay", base.delay, place, ctx),
        retry_window=_time(value, "retry_window", base.retry_window, place, ctx),
        lifetime=_time(value, "lifetime", base.lifetime, place, ctx),
        ipv4_prefix=read.count("ipv4_prefix", base.ipv4_prefix, 8, 32),
        ipv6_prefix=read.count("ipv6_prefix", base.ipv6_prefix, 16, 128),
        allowlist_after=read.count("auto_allowlist", base.allowlist_after, 0, 1_000_000),
        pool=read.flag("pool", base.pool),
        defer_unavailable=read.choice("on_unavailable", "pass", ("pass", "defer")) == "defer",
    )
    if settings.retry_window <= settings.delay:
        ctx.error(
            f"{place}.retry_window",
            "must be longer than the delay, or no retry ever passes",
        )
    if settings.lifetime < max(settings.delay, settings.retry_window):
        ctx.error(
            f"{place}.lifetime",
            "must be at least the delay and the retry window, or entries are forgotten "
            "before their retry can pass",
        )
    return Greylist(settings) if errors == len(ctx.problems.errors) else None


__all__ = ["DEFAULT_REPLY", "KEY", "PREFIX", "SETTINGS", "Greylist", "compile_greylist", "duration"]
