"""The embedded rate-limit store, and the fact provider the ``limit`` check reads.

Counters are keyed by (rule id, key, window length) and hold one sliding
window each (`postgate.state.windows`), so a reload that changes a limit
keeps the counts and judges them under the new limit, and one that changes
a window's length starts that window afresh. Messages in flight reserve
what they would be charged, keyed by Postfix's ``instance`` (one per mail
transaction, SMTPD_POLICY_README); a reservation ends when the message is
charged at END-OF-MESSAGE, when the same SMTP session starts another
transaction, or after ``reservation_timeout`` seconds: a message refused or
abandoned is never charged.

The operations are the ones a shared backend runs as one atomic script
each (a Redis backend: one Lua script per operation, loaded once and run
with EVALSHA): `view` (the counts of a key's windows and what other
messages reserve), `reserve` (set this message's share), `charge` (add to
every window and end the message's reservations), `release`, `entries` and
`reset`. The layout carries over: a counter is one key ``RULE:SECONDS:KEY``
holding a `windows.Ring`, a reservation a field per ``instance`` of a hash
per (rule, key). Everything here runs on the caller's thread; a `DiskStore`
persists charges behind it.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Final

from postgate.state import windows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from postgate.state.disk import DiskStore

KIND: Final = "limit"  # the DiskStore kind of counter rows
SWEEP_EVERY: Final = 10.0  # seconds of the clock between sweeps of expired state
SWEEP_CHUNK: Final = 2000  # counters looked at per sweep step: never a long pause
# Messages in flight at once; past it the oldest stops reserving (a flood of
# transactions that never end must not grow memory without bound).
MAX_FLIGHTS: Final = 100_000


class View:
    """One (rule, key) as one message sees it: the check's `LimitView`."""

    __slots__ = ("held", "key", "own", "reserved", "rule", "store")

    def __init__(
        self, store: LimitStore, rule: str, key: str, own: int, reserved: int, held: dict[str, int]
    ) -> None:
        self.store, self.rule, self.key = store, rule, key
        self.own, self.reserved, self.held = own, reserved, held

    def counted(self, seconds: int, now: float) -> int:
        ring = self.store.counters.get(counter(self.rule, self.key, seconds))
        return 0 if ring is None else windows.count(ring, seconds, now)

    def retry(self, seconds: int, now: float, room: int) -> float:
        ring = self.store.counters.get(counter(self.rule, self.key, seconds))
        if ring is None:
            return 0.0 if room >= 0 else float("inf")
        return windows.retry(ring, seconds, now, room)


class Flight:
    """One message in flight: its session and what it reserved, by (rule, key)."""

    __slots__ = ("holds", "session", "since")

    def __init__(self, session: str, since: float) -> None:
        self.session, self.since = session, since
        self.holds: dict[tuple[str, str], int] = {}


class LimitStore:
    """Counters and reservations, in memory; written behind to ``disk`` when given."""

    def __init__(self, disk: DiskStore | None = None, reservation_timeout: float = 900.0) -> None:
        # ``RULE:SECONDS:KEY`` (`counter`): one string, as the file's rows are keyed.
        self.counters: dict[str, windows.Ring] = {}
        self.reserved: dict[tuple[str, str], int] = {}
        self.flights: dict[str, Flight] = {}
        self.sessions: dict[str, str] = {}  # session -> its current instance
        self.disk = disk
        self.timeout = reservation_timeout
        self._swept = float("-inf")
        self._pending: Iterator[str] = iter(())
        # Messages that ended without END-OF-MESSAGE, while none was ever seen.
        self.unfinished = 0
        self.ends_seen = False

    def load(self, now: float) -> int:
        """Read the counters the file holds (at start, before serving)."""
        if self.disk is None:
            return 0
        loaded = 0
        for row, value, _ in self.disk.rows(KIND, now):
            self.counters[row] = json.loads(value)
            loaded += 1
        return loaded

    # ------------------------------------------------------------ operations

    def view(self, rule: str, key: str, instance: str) -> View:
        flight = self.flights.get(instance) if instance else None
        own = flight.holds.get((rule, key), 0) if flight else 0
        held = {k: n for (r, k), n in flight.holds.items() if r == rule} if flight else {}
        return View(self, rule, key, own, self.reserved.get((rule, key), 0) - own, held)

    def reserve(
        self, rule: str, key: str, instance: str, session: str, amount: int, now: float
    ) -> None:
        """This message now holds ``amount`` of (rule, key) until it ends."""
        flight = self.flights.get(instance)
        if flight is None:
            if len(self.flights) >= MAX_FLIGHTS:
                self.release(next(iter(self.flights)))
            flight = self.flights[instance] = Flight(session, now)
            self.sessions[session] = instance
        before = flight.holds.get((rule, key), 0)
        flight.holds[rule, key] = amount
        self.reserved[rule, key] = self.reserved.get((rule, key), 0) + amount - before

    def charge(
        self,
        rule: str,
        spans: tuple[int, ...],
        charges: tuple[tuple[str, int], ...],
        instance: str,
        now: float,
    ) -> None:
        """Charge each (key, weight) in every window; the message's holds under ``rule`` end."""
        self.ends_seen = True
        for key, weight in charges:
            for seconds in spans:
                name = counter(rule, key, seconds)
                ring = self.counters.get(name)
                if ring is None:
                    ring = self.counters[name] = windows.new_ring()
                windows.add(ring, seconds, now, weight)
                if self.disk is not None:
                    expires = windows.expires(ring, seconds)
                    self.disk.put(KIND, name, json.dumps(ring), expires)
        flight = self.flights.get(instance)
        if flight is not None:
            for held in [h for h in flight.holds if h[0] == rule]:
                self._unhold(held, flight.holds.pop(held))
            if not flight.holds:
                self._forget(instance, flight)

    def release(self, instance: str) -> None:
        """The message ended without being charged (refused, abandoned, timed out)."""
        flight = self.flights.get(instance)
        if flight is None:
            return
        for held, amount in flight.holds.items():
            self._unhold(held, amount)
        self._forget(instance, flight)
        if not self.ends_seen:
            self.unfinished += 1

    def entries(self, rule: str = "", key: str = "", prefix: str = "") -> list[dict[str, object]]:
        """The counters (and reservations) matching, for ``postgate state``."""
        found: dict[tuple[str, str], dict[str, object]] = {}
        for name, ring in self.counters.items():
            r, seconds, k = split(name)
            if _matches(r, k, rule, key, prefix):
                entry = found.setdefault((r, k), {"rule": r, "key": k, "windows": {}})
                entry["windows"][str(seconds)] = ring  # type: ignore[index]
        for (r, k), amount in self.reserved.items():
            if amount and _matches(r, k, rule, key, prefix):
                found.setdefault((r, k), {"rule": r, "key": k, "windows": {}})["reserved"] = amount
        return [found[k] for k in sorted(found)]

    def reset(self, rule: str = "", key: str = "", prefix: str = "") -> int:
        """Forget the counters matching; returns how many (rule, key) were reset."""
        gone = [(n, split(n)) for n in self.counters]
        gone = [(n, (r, s, k)) for n, (r, s, k) in gone if _matches(r, k, rule, key, prefix)]
        for name, _ in gone:
            del self.counters[name]
            if self.disk is not None:
                self.disk.delete(KIND, name)
        return len({(r, k) for _, (r, _, k) in gone})

    # ------------------------------------------------------------ housekeeping

    def session_seen(self, session: str, instance: str) -> None:
        """A request of ``session``: a new instance there ends the previous message."""
        previous = self.sessions.get(session)
        if previous is not None and previous != instance:
            self.release(previous)

    def sweep(self, now: float) -> None:
        """End timed-out reservations and drop counters that expired, a chunk at a time."""
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        for instance in [i for i, f in self.flights.items() if now - f.since > self.timeout]:
            self.release(instance)
        chunk = list(itertools.islice(self._pending, SWEEP_CHUNK))
        if not chunk:
            self._pending = iter(list(self.counters))
            return
        for name in chunk:
            ring = self.counters.get(name)
            if ring is not None and windows.expires(ring, split(name)[1]) <= now:
                del self.counters[name]

    def _unhold(self, held: tuple[str, str], amount: int) -> None:
        left = self.reserved.get(held, 0) - amount
        if left > 0:
            self.reserved[held] = left
        else:
            self.reserved.pop(held, None)

    def _forget(self, instance: str, flight: Flight) -> None:
        del self.flights[instance]
        if self.sessions.get(flight.session) == instance:
            del self.sessions[flight.session]


def counter(rule: str, key: str, seconds: int) -> str:
    """A counter's name: a rule id has no colon, and the key comes last."""
    return f"{rule}:{seconds}:{key}"


def split(name: str) -> tuple[str, int, str]:
    rule, seconds, key = name.split(":", 2)
    return rule, int(seconds), key


def _matches(r: str, k: str, rule: str, key: str, prefix: str) -> bool:
    return (not rule or r == rule) and (not key or k == key) and k.startswith(prefix)


__all__ = ["KIND", "Flight", "LimitStore", "View", "counter", "split"]
