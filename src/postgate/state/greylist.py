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
    from postgate.state.disk import DiskStore
    from postgate.wire.codec import PolicyRequest

PREFIX: Final = "greylist"


ENTRIES: Final = "greylist"  # the state file's row kinds (`postgate.state.disk`)
CLIENTS: Final = "greylist_client"
# Eviction looks at the oldest record first; doing it once a minute of the
# clock rather than on every write keeps a dict emptied at the front cheap.
SWEEP_EVERY: Final = 60.0


@dataclass(slots=True)
class GreylistStore:
    """Triplets and clients in memory, oldest first, so expired ones leave from the front.

    Every write moves its record to the end of its dict, so the dicts stay
    ordered by last sight and eviction stops at the first live record:
    memory is bounded by what was seen within ``lifetime`` (the longest of
    any rule that recorded). With ``disk``, every write is also queued for
    the state file, whose rows expire on their own; `load` reads them back.
    """

    disk: DiskStore | None = None
    lifetime: float = 35 * DAY
    entries: dict[str, Entry] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    swept: float = 0.0  # when expired records were last evicted

    def seen(self, key: str, client: str) -> Seen:
        return Seen(self.entries.get(key), self.clients.get(client))

    def record(self, key: str, client: str, now: float, settings: Settings) -> Outcome:
        """Check-and-record for one triplet: `step` on what is held, then store its result.

        Two keys (the triplet, its client) and five numbers (now, delay,
        retry window, lifetime, allowlist_after) in, one outcome out: the
        shape of one atomic server-side script for a shared backend (read
        both hashes, judge, write them back with their expiry).
        """
        outcome = step(self.seen(key, client), now, settings)
        self.lifetime = max(self.lifetime, settings.lifetime)
        if outcome.entry is not None:
            self.entries.pop(key, None)
            self.entries[key] = outcome.entry
            self._put(ENTRIES, key, outcome.entry)
        if outcome.client is not None and outcome.client != self.clients.get(client):
            self.clients.pop(client, None)
            self.clients[client] = outcome.client
            self._put(CLIENTS, client, outcome.client)
        if now >= self.swept + SWEEP_EVERY or now < self.swept:
            self.swept = now
            self.evict(now)
        return outcome

    def _put(self, kind: str, key: str, record: Entry | Client) -> None:
        if self.disk is not None:
            first, last = record
            self.disk.put(kind, key, f"{first!r} {last!r}", last + self.lifetime)

    def load(self, now: float) -> int:
        """Read the state file's live rows (blocking: before the reactor serves)."""
        if self.disk is None:
            return 0
        rows: dict[str, list[tuple[str, str]]] = {ENTRIES: [], CLIENTS: []}
        for kind in rows:
            rows[kind] = [(key, value) for key, value, _ in self.disk.rows(kind, now)]
        for key, value in sorted(rows[ENTRIES], key=lambda row: float(row[1].split()[1])):
            first, last = value.split()
            self.entries[key] = Entry(float(first), float(last))
        for key, value in sorted(rows[CLIENTS], key=lambda row: float(row[1].split()[1])):
            passes, last = value.split()
            self.clients[key] = Client(int(passes), float(last))
        return len(rows[ENTRIES]) + len(rows[CLIENTS])

    def evict(self, now: float) -> int:
        """Drop records unseen for ``lifetime``; return how many (the file expires its own)."""
        gone = _evict(self.entries, now - self.lifetime)
        return gone + _evict(self.clients, now - self.lifetime)

    def forget(self, key: str) -> int:
        """Forget one triplet or client (by its exact key); return how many records went."""
        gone = 0
        for kind, records in ((ENTRIES, self.entries), (CLIENTS, self.clients)):
            if records.pop(key, None) is not None:
                gone += 1
                if self.disk is not None:
                    self.disk.delete(kind, key)
        return gone

    def reset(self, prefix: str = "") -> int:
        """Forget triplets and clients whose key starts with ``prefix``; return how many."""
        gone = 0
        for kind, records in ((ENTRIES, self.entries), (CLIENTS, self.clients)):
            for key in [k for k in records if k.startswith(prefix)]:
                del records[key]
                if self.disk is not None:
                    self.disk.delete(kind, key)
                gone += 1
        return gone


def _evict(records: dict[str, Entry] | dict[str, Client], before: float) -> int:
    gone = 0
    while records:
        key = next(iter(records))
        if records[key].last >= before:
            break
        del records[key]
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

    def __init__(self, store: GreylistStore | None = None, *, tally: bool = True) -> None:
        # The daemon's store lives across reloads, with the state file behind
        # it; the daemon keeps no tally (it would grow with every triplet).
        self.store = store if store is not None else GreylistStore()
        self.tally = Tally() if tally else None
        self.outcomes: dict[str, int] = {}  # new, early, passed, ...: for /metrics

    def attach(self, disk: DiskStore, now: float) -> int:
        """Persist to ``disk`` from now on, after loading what it holds; returns rows loaded."""
        self.store.disk = disk
        return self.store.load(now)

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
        outcome = self.store.record(triplet, client, now, settings)
        self.outcomes[outcome.why] = self.outcomes.get(outcome.why, 0) + 1
        if self.tally is not None:
            self.tally.count(triplet, outcome, now)

    def summary(self) -> list[str]:
        """Replay's closing line about greylisting (none when no rule greylisted)."""
        return self.tally.lines() if self.tally is not None else []


__all__ = ["PREFIX", "GreylistProvider", "GreylistStore", "Tally", "split_fact"]
