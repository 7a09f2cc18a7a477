"""The embedded greylist store: triplets and clients in memory, and the provider over them.

The judgement is `postgate.rules.greylisting.step`; the store applies it
when a decision's effect comes back (`GreylistStore.record`: check and record
in one call, which is what a shared backend's atomic script does too). The
provider gives a request's records to the check (`peek`, never blocking) and
records after the decision. Its tally answers replay's question "how much
mail would greylisting have delayed, and by how long".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from postgate.rules.greylisting import (
    DAY,
    UNAVAILABLE,
    Client,
    Entry,
    Outcome,
    Seen,
    Settings,
    step,
)

if TYPE_CHECKING:
    from postgate.rules.model import Effect
    from postgate.wire.codec import PolicyRequest

PREFIX: Final = "greylist"


@dataclass(slots=True)
class GreylistStore:
    """Triplets and clients in memory, oldest first, so expired ones leave from the front.

    Every write moves its record to the end of its dict, so the dicts stay
    ordered by last sight and eviction stops at the first live record:
    memory is bounded by what was seen within ``lifetime``. ``dirty`` names
    what changed since the last `take_dirty`, for a write-behind file.
    """

    lifetime: float = 35 * DAY
    entries: dict[str, Entry] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    dirty_entries: set[str] = field(default_factory=set)
    dirty_clients: set[str] = field(default_factory=set)

    def seen(self, key: str, client: str) -> Seen:
        return Seen(self.entries.get(key), self.clients.get(client))

    def record(self, key: str, client: str, now: float, settings: Settings) -> Outcome:
        """Check-and-record for one triplet: `step` on what is held, then store its result."""
        outcome = step(self.seen(key, client), now, settings)
        if outcome.entry is not None:
            self.entries.pop(key, None)
            self.entries[key] = outcome.entry
            self.dirty_entries.add(key)
        if outcome.client is not None and outcome.client != self.clients.get(client):
            self.clients.pop(client, None)
            self.clients[client] = outcome.client
            self.dirty_clients.add(client)
        self.evict(now)
        return outcome

    def evict(self, now: float) -> int:
        """Drop records not seen for ``lifetime``; return how many went."""
        gone = _evict(self.entries, self.dirty_entries, now - self.lifetime)
        return gone + _evict(self.clients, self.dirty_clients, now - self.lifetime)

    def reset(self, prefix: str = "") -> int:
        """Forget triplets and clients whose key starts with ``prefix``; return how many."""
        gone = 0
        for records, dirty in (
            (self.entries, self.dirty_entries),
            (self.clients, self.dirty_clients),
        ):
            for key in [k for k in records if k.startswith(prefix)]:
                del records[key]
                dirty.add(key)
                gone += 1
        return gone

    def take_dirty(self) -> tuple[dict[str, Entry | None], dict[str, Client | None]]:
        """What changed since the last call (None: deleted), for the state file."""
        entries = {k: self.entries.get(k) for k in self.dirty_entries}
        clients = {k: self.clients.get(k) for k in self.dirty_clients}
        self.dirty_entries.clear()
        self.dirty_clients.clear()
        return entries, clients


def _evict(records: dict[str, Entry] | dict[str, Client], dirty: set[str], before: float) -> int:
    gone = 0
    while records:
        key = next(iter(records))
        if records[key].last >= before:
            break
        del records[key]
        dirty.add(key)
        gone += 1
    return gone


def split_fact(name: str) -> tuple[str, str]:
    """``greylist:<triplet>`` to the triplet's key and its client's (its first field)."""
    triplet = name.partition(":")[2]
    return triplet, triplet.partition(" ")[0]


@dataclass(slots=True)
class Tally:
    """What greylisting did over a run: deferrals, and how long passed triplets waited."""

    deferred: int = 0
    passed: int = 0
    allowlisted: int = 0
    waits: list[float] = field(default_factory=list)  # first sight to pass, per triplet
    waiting: set[str] = field(default_factory=set)  # deferred, not passed yet

    def count(self, triplet: str, outcome: Outcome, now: float) -> None:
        if outcome.defer:
            self.deferred += 1
            self.waiting.add(triplet)
            return
        self.waiting.discard(triplet)
        if outcome.why == "allowlisted":
            self.allowlisted += 1
            return
        self.passed += 1
        if outcome.why == "passed" and outcome.entry is not None:
            self.waits.append(now - outcome.entry.first)

    def lines(self) -> list[str]:
        if not (self.deferred or self.passed or self.allowlisted):
            return []
        line = (
            f"greylisting: {self.deferred} deferred, {self.passed} passed, "
            f"{self.allowlisted} allowlisted; {len(self.waits)} triplets delayed"
        )
        if self.waits:
            line += f" (median {statistics.median(self.waits):.0f} s, max {max(self.waits):.0f} s)"
        return [f"{line}, {len(self.waiting)} never passed"]


class GreylistProvider:
    """The ``greylist:`` facts: a request's records in, the decision's step recorded."""

    def __init__(self, store: GreylistStore | None = None) -> None:
        self.store = store if store is not None else GreylistStore()
        self.tally = Tally()

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:  # noqa: ARG002
        return self.store.seen(*split_fact(name))

    async def fetch(self, name: str, request: PolicyRequest, now: float) -> object:
        return self.peek(name, request, now)

    def unavailable(self, name: str) -> object:  # noqa: ARG002 - one outcome for all
        return UNAVAILABLE

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:  # noqa: ARG002
        settings = effect.value
        if not isinstance(settings, Settings):
            return
        triplet, client = split_fact(effect.fact)
        self.tally.count(triplet, self.store.record(triplet, client, now, settings), now)

    def summary(self) -> list[str]:
        """Replay's closing line about greylisting (none when no rule greylisted)."""
        return self.tally.lines()


__all__ = ["PREFIX", "GreylistProvider", "GreylistStore", "Tally", "split_fact"]
