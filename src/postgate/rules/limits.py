"""The ``limit`` rule key: a rate limit checked at RCPT and charged once per message.

``limit = { key = ["sasl_username"], count = "messages", windows = ["100 per
hour", "1000 per day"] }`` compiles to a `LimitCheck`. At RCPT (and any stage
before the message ends) it holds, so the rule's action answers, when what
the key has been charged plus what its messages in flight have reserved
plus this message would go over a window's limit; otherwise it reserves the
message. At END-OF-MESSAGE it charges the message once, with Postfix's real
``recipient_count`` and ``size`` (SMTPD_POLICY_README, Policy protocol
description), and the reservation ends. A message refused or abandoned
before then is never charged. The counting itself (docs/rules.md, Rate
limits) lives with the state; this module only reads it through `LimitView`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from postgate.config.values import check_keys, suggest
from postgate.rules.attributes import DERIVED, KNOWN
from postgate.rules.facts import fold
from postgate.rules.model import ABSENT, Effect, Verdict

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.rules.conditions import Context
    from postgate.wire.codec import PolicyRequest

PREFIX: Final = "limit"  # facts and effects are named ``limit:RULE:KEY``
COUNTS: Final = ("messages", "recipients", "bytes")
NETWORK: Final = "client_network"  # the client's /24 (IPv4) or /64 (IPv6)
KEYS: Final = (*KNOWN, NETWORK)
EOM: Final = "END-OF-MESSAGE"
NEVER_CHARGED: Final = (
    "a limit is charged at END-OF-MESSAGE: add it to this rule's states, or the "
    "limit never counts anything"
)
_UNITS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_SHORT: Final = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}
_WINDOW: Final = re.compile(
    r"\s*(\d+)\s*(?:per|/)\s*(\d+)?\s*(second|minute|hour|day|week|s|m|h|d|w)s?\s*", re.IGNORECASE
)
MIN_WINDOW: Final = 10  # seconds: a sub-bucket of one second
MAX_WINDOW: Final = 31 * 86400
_RESERVING: Final = frozenset({"RCPT", "DATA"})  # stages where a message in flight reserves
_RECIPIENT_KEYS: Final = frozenset({"recipient", "recipient_domain", "recipient_localpart"})
_NOT_AT_HAND: Final = Verdict(holds=False)  # discarded: the walk gathers the counter first


class LimitView(Protocol):
    """What the state holds for one (rule, key), as seen by one message in flight."""

    reserved: int  # reserved by other messages in flight
    own: int  # reserved by this message (its ``instance``)
    held: Mapping[str, int]  # this message's reservations under the rule, by key

    def counted(self, seconds: int, now: float) -> int: ...
    def retry(self, seconds: int, now: float, room: int) -> float: ...


@dataclass(frozen=True, slots=True)
class Reserve:
    """This message (the request's ``instance``) now reserves ``amount`` of ``key``."""

    rule: str
    key: str
    amount: int


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge each (key, weight) in every window, and end the message's reservations."""

    rule: str
    windows: tuple[int, ...]
    charges: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Breach:
    """The key is over; the state logs ``limit_exceeded`` once per breach."""

    rule: str
    key: str
    window: str
    limit: int
    retry: float


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    seconds: int
    text: str  # as written: "100 per hour"

    @property
    def span(self) -> str:
        """The window for a reply: ``hour``, ``10 minutes``."""
        for unit, size in reversed(_UNITS.items()):
            if self.seconds % size == 0:
                n = self.seconds // size
                return unit if n == 1 else f"{n} {unit}s"
        return f"{self.seconds} seconds"  # unreachable: seconds divide everything


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One rule's limit: who shares a counter (``key``), what is counted, the windows."""

    rule: str
    key: tuple[str, ...]
    count: str
    windows: tuple[Window, ...]

    @property
    def text(self) -> str:
        shown = ", ".join(w.text for w in self.windows)
        return f"limit {'+'.join(self.key)}: {shown} ({self.count})"

    def key_of(self, request: PolicyRequest) -> str:
        """The counter's key for this request; parts joined by ``|``, empty when a part is."""
        parts = []
        for name in self.key:
            value = key_part(name, request)
            if not value:
                return ""
            parts.append(value.replace("|", "%7C"))
        return "|".join(parts)

    def verdict(self, request: PolicyRequest, facts: Mapping[str, object], now: float) -> Verdict:
        key = self.key_of(request)
        stage = request.get("protocol_state").upper()
        # At END-OF-MESSAGE the message's reservations are read even when the
        # key is empty there (``recipient`` is, with several recipients).
        if not key and stage != EOM:
            return Verdict(holds=False, note=f"no {'+'.join(self.key)}: not limited")
        name = f"{PREFIX}:{self.rule}:{key}"
        found = facts[name]
        if found is ABSENT:
            return _NOT_AT_HAND
        view = cast("LimitView", found)
        if stage == EOM:
            return self._charge(request, key, view, now)
        need = self._need(request, stage, view.own)
        refused = self._refused(key, view, need, now)
        if refused is not None:
            return refused
        effects = (Effect(name, Reserve(self.rule, key, need)),)
        reserve = effects if stage in _RESERVING else ()
        return Verdict(holds=False, effects=reserve, note=self._note(view, now))

    def _need(self, request: PolicyRequest, stage: str, own: int) -> int:
        """What this message holds once this request passes: one more recipient at RCPT."""
        if self.count == "bytes":
            return max(own, number(request.get("size")), 1)
        if self.count == "messages":
            return 1
        if stage == "DATA":  # Postfix's count of the recipients it accepted
            return number(request.get("recipient_count")) or max(own, 1)
        return own + 1 if stage == "RCPT" else max(own, 1)

    def _refused(self, key: str, view: LimitView, need: int, now: float) -> Verdict | None:
        """The verdict when ``need`` more goes over a window: the longest wait is told."""
        worst: tuple[float, Window] | None = None
        for window in self.windows:
            room = window.limit - view.reserved - need
            if view.counted(window.seconds, now) > room:
                wait = view.retry(window.seconds, now, room)
                if worst is None or wait > worst[0]:
                    worst = (wait, window)
        if worst is None:
            return None
        wait, window = worst
        values = {"limit": str(window.limit), "window": window.span, "retry": duration(wait)}
        breach = Breach(self.rule, key, window.text, window.limit, wait)
        return Verdict(
            holds=True,
            effects=(Effect(f"{PREFIX}:{self.rule}:{key}", breach),),
            values=values,
            note=f"{self._note(view, now)}; +{need} goes over {window.text}",
        )

    def _charge(self, request: PolicyRequest, key: str, view: LimitView, now: float) -> Verdict:
        """END-OF-MESSAGE: charge every key this message reserved, with real weights."""
        held = dict(view.held)
        if not held and key:  # no RCPT check saw it (END-OF-MESSAGE wiring only)
            refused = self._refused(key, view, self._weight(request, 0), now)
            if refused is not None:
                return refused
            held = {key: 0}
        if not held:
            return Verdict(holds=False, note=f"no {'+'.join(self.key)}: not limited")
        charges = tuple((k, self._weight(request, own)) for k, own in sorted(held.items()))
        effect = Effect(f"{PREFIX}:{self.rule}:{key}", Charge(self.rule, self.seconds, charges))
        shown = ", ".join(f"{k} +{n}" for k, n in charges)
        return Verdict(holds=False, effects=(effect,), note=f"charged {shown} {self.count}")

    def _weight(self, request: PolicyRequest, own: int) -> int:
        if self.count == "messages":
            return 1
        if self.count == "bytes":
            return number(request.get("size"))
        if own and _RECIPIENT_KEYS.intersection(self.key):
            return own  # the recipients of this key, counted as they were reserved
        return number(request.get("recipient_count")) or own or 1

    @property
    def seconds(self) -> tuple[int, ...]:
        return tuple(w.seconds for w in self.windows)

    def _note(self, view: LimitView, now: float) -> str:
        counts = ", ".join(f"{view.counted(w.seconds, now)} of {w.text}" for w in self.windows)
        reserved = f", {view.reserved} reserved in flight" if view.reserved else ""
        return f"{counts}{reserved}"


def key_part(name: str, request: PolicyRequest) -> str:
    if name == NETWORK:
        return client_network(request.get("client_address"))
    source = DERIVED.get(name)
    if source is None:
        return fold(name, request.get(name))
    address = request.get(source)
    local, at, domain = address.rpartition("@")
    if not at:
        return ""
    return fold(name, domain if name.endswith("_domain") else local)


def client_network(address: str) -> str:
    """The client's /24 (IPv4) or /64 (IPv6): one counter for a host's neighbours."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    ip4 = ip.ipv4_mapped if ip.version == 6 else ip
    return str(ipaddress.ip_network(f"{ip4}/24", strict=False))


def number(text: str) -> int:
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 18 else 0


def duration(seconds: float) -> str:
    """A wait for a reply: ``45 seconds``, ``12 minutes``, ``3 hours``; rounded up."""
    if math.isinf(seconds):
        return "a while"
    if seconds <= 90:
        return f"{max(math.ceil(seconds), 1)} seconds"
    if seconds <= 90 * 60:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"


# ---------------------------------------------------------------- compiling

_STEP: Final = re.compile(r"(\w+)\[(\d+)\]")
_TABLE_KEYS: Final = ("key", "count", "windows")


def compile_limit(value: Any, place: str, ctx: Context) -> LimitCheck | None:
    """``limit = { key = [...], count = "...", windows = [...] }`` at ``place``."""
    if not isinstance(value, dict):
        ctx.error(place, 'must be a table: { key = ["sasl_username"], windows = ["100 per hour"] }')
        return None
    check_keys(value, _TABLE_KEYS, place, ctx.problems)
    key = _key(value.get("key"), f"{place}.key", ctx)
    count = value.get("count", "messages")
    if count not in COUNTS:
        ctx.error(f"{place}.count", f"{count!r} is not one of {', '.join(COUNTS)}")
    windows = _windows(value.get("windows"), f"{place}.windows", ctx)
    rule = _rule_id(ctx.doc, place)
    if key is None or windows is None or count not in COUNTS or rule is None:
        return None
    return LimitCheck(rule, key, count, windows)


def _key(raw: Any, place: str, ctx: Context) -> tuple[str, ...] | None:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        ctx.error(place, 'must name who shares a counter: ["sasl_username"], ["client_network"]')
        return None
    bad = [name for name in items if name not in KEYS]
    for name in bad:
        ctx.error(place, f"{name!r} is not an attribute{suggest(name, KEYS)}")
    return None if bad else tuple(items)


def _windows(raw: Any, place: str, ctx: Context) -> tuple[Window, ...] | None:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        ctx.error(place, 'must list windows: ["100 per hour", "1000 per day"]')
        return None
    found = [parse_window(item, f"{place}[{n}]", ctx) for n, item in enumerate(items)]
    good = [w for w in found if w is not None]
    if len({w.seconds for w in good}) != len(good):
        ctx.error(place, "two windows of the same length: keep the lower limit")
        return None
    return tuple(good) if len(good) == len(found) else None


def parse_window(raw: Any, place: str, ctx: Context) -> Window | None:
    """``100 per hour``, ``5 per 10 minutes``, ``1000/d``."""
    found = _WINDOW.fullmatch(raw) if isinstance(raw, str) else None
    if found is None:
        ctx.error(place, f'{raw!r}: write a window as "100 per hour" or "5 per 10 minutes"')
        return None
    limit, times, unit = int(found[1]), int(found[2] or 1), found[3].lower()
    seconds = times * _UNITS[_SHORT.get(unit, unit)]
    if not MIN_WINDOW <= seconds <= MAX_WINDOW or limit < 1:
        ctx.error(place, f"{raw!r}: a limit of at least 1 in 10 seconds to 31 days")
        return None
    return Window(limit, seconds, " ".join(raw.split()))


def _rule_id(doc: Mapping[str, Any], place: str) -> str | None:
    """The id of the rule at ``place`` (``rules[2].rules[0].limit``): state is keyed by it."""
    node: Any = doc
    for name, index in _STEP.findall(place):
        try:
            node = node[name][int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    rule_id = node.get("id") if isinstance(node, dict) else None
    return rule_id if isinstance(rule_id, str) else None
