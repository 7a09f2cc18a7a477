"""Greylisting's judgement: triplet entries, the auto-allowlist, and the one step on them.

`step` is the whole decision for one triplet on a given clock, pure: what
was seen before (a `Seen`), the time and the rule's `Settings` in; whether to
defer, how long is left and what to store out. The check (`rules.greylist`)
judges what the store held with it; the store (`postgate.state.greylist`)
applies it again when it records, so its write is check-and-record in one
step. A shared backend runs the same step as one atomic script on the server
(read both records, judge, write them back), so two MX hosts cannot disagree
about a triplet. The behaviour is postgrey's, as its
manual page documents it (docs/rules.md, Greylisting):

* a triplet seen for the first time, or first seen less than ``delay``
  seconds ago, is deferred; a retry after the delay passes, and the triplet
  is then known: later mail for it passes at once;
* a triplet that never passed and whose first retry comes more than
  ``retry_window`` after it was first seen starts over;
* an entry not seen for ``lifetime`` seconds is forgotten (and evicted);
* a client that passed greylisting ``allowlist_after`` times (a triplet's
  first pass after its delay; one an hour counts) skips greylisting while
  it keeps being seen within ``lifetime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

DAY: Final = 86400.0
HOUR: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """One greylist rule's timings and keying (postgrey's defaults)."""

    delay: float = 300.0
    retry_window: float = 2 * DAY
    lifetime: float = 35 * DAY
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    allowlist_after: int = 5  # passes before a client skips greylisting; 0: never
    pool: bool = False  # key pool senders on their domain (`postgate.rules.triplets`)
    defer_unavailable: bool = False  # on_unavailable = "defer" (else mail passes)


class Entry(NamedTuple):
    """A triplet: when it was first seen (this round) and last seen."""

    first: float
    last: float


class Client(NamedTuple):
    """A client (network or pool) on its way to the auto-allowlist."""

    passes: int
    last: float  # when a pass last counted


class Seen(NamedTuple):
    """What the store holds for one request: its triplet and its client."""

    entry: Entry | None = None
    client: Client | None = None


class Outcome(NamedTuple):
    """What `step` decided, and the records to store (None: leave as is)."""

    defer: bool
    wait: float  # seconds until a retry passes; 0 when it passes
    why: str  # new, early, restarted, passed, known, allowlisted
    entry: Entry | None
    client: Client | None


NOTHING: Final = Seen()
# The fact when the store could not be read: the rule's on_unavailable decides.
UNAVAILABLE: Final = object()


def live(seen: Seen, now: float, settings: Settings) -> Seen:
    """``seen`` without records older than the lifetime (as if evicted already)."""
    entry, client = seen
    if entry is not None and now - entry.last > settings.lifetime:
        entry = None
    if client is not None and now - client.last > settings.lifetime:
        client = None
    return Seen(entry, client)


def allowlisted(client: Client | None, settings: Settings) -> bool:
    return client is not None and 0 < settings.allowlist_after <= client.passes


def _counted(client: Client | None, now: float) -> Client:
    """One more pass, unless one counted in the last hour (a clock gone back counts)."""
    if client is None:
        return Client(1, now)
    if now >= client.last + HOUR or client.last > now:
        return Client(client.passes + 1, now)
    return client


def step(seen: Seen, now: float, settings: Settings) -> Outcome:
    """Judge one delivery attempt of a triplet at ``now`` and say what to remember."""
    entry, client = live(seen, now, settings)
    if allowlisted(client, settings):
        return Outcome(
            defer=False, wait=0.0, why="allowlisted", entry=None, client=_counted(client, now)
        )
    why = "new"
    first = now
    if entry is not None:
        known = entry.last - entry.first >= settings.delay
        first = min(entry.first, now)  # a first sight in the future is a clock gone back
        why = "known" if known else "early"
        if not known and now - first > settings.retry_window:
            first, why = now, "restarted"
    wait = 0.0 if why == "known" else settings.delay - (now - first)
    if wait > 0:
        return Outcome(defer=True, wait=wait, why=why, entry=Entry(first, now), client=None)
    if why == "known":  # only a pass after greylisting counts towards the allowlist
        return Outcome(defer=False, wait=0.0, why=why, entry=Entry(first, now), client=None)
    counted = _counted(client, now) if settings.allowlist_after else None
    return Outcome(defer=False, wait=0.0, why="passed", entry=Entry(first, now), client=counted)


__all__ = [
    "DAY",
    "NOTHING",
    "UNAVAILABLE",
    "Client",
    "Entry",
    "Outcome",
    "Seen",
    "Settings",
    "allowlisted",
    "live",
    "step",
]
