"""``postgate state --greylist``: greylist triplets and the auto-allowlist, as JSON-ready data.

The same function answers a running daemon's control socket (on its store,
where reset works) and reads the state file directly when no daemon
answers (list and show only). Selections: an exact key, or a key prefix
(``192.0.2.`` for a network's triplets and its client record,
``pool:outlook.com`` for a pool's).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from postgate.rules.greylisting import Client, Entry
from postgate.state.greylist import CLIENTS, ENTRIES, GreylistStore
from postgate.state.report import MAX_ENTRIES, StateError, select

if TYPE_CHECKING:
    from pathlib import Path


def _matches(key: str, exact: str, prefix: str) -> bool:
    return (not exact or key == exact) and key.startswith(prefix)


def handle(
    store: GreylistStore, args: dict[str, Any], now: float, allowlist_after: int = 5
) -> dict[str, Any]:
    """``{"action": "list"|"show"|"reset", "key", "prefix", "all"}`` on greylisting's records."""
    action = args.get("action", "list")
    _, exact, prefix = select(args)
    if action == "reset":
        if not (exact or prefix or args.get("all") is True):
            raise StateError("reset needs a key or a prefix (or all)")
        if exact:
            return {"reset": store.forget(exact)}
        return {"reset": store.reset(prefix)}
    clients = [
        {
            "client": key,
            "passes": c.passes,
            "last_pass": c.last,
            "allowlisted": 0 < allowlist_after <= c.passes,
        }
        for key, c in store.clients.items()
        if _matches(key, exact, prefix)
    ]
    triplets = [
        {"triplet": key, "first_seen": e.first, "last_seen": e.last}
        for key, e in store.entries.items()
        if _matches(key, exact, prefix) or (exact and key.startswith(exact + " "))
    ]
    answer: dict[str, Any] = {
        "clients": clients[:MAX_ENTRIES],
        "triplets": len(triplets),
        "total": len(clients) + len(triplets),
        "now": now,
    }
    if action == "show":
        answer["triplet_entries"] = triplets[:MAX_ENTRIES]
    return answer


def read_file(path: Path, now: float, lifetime: float) -> GreylistStore:
    """Greylisting's records in a state file, read-only (the daemon may be writing it)."""
    if not path.exists():
        raise StateError(f"{path}: no state file (has the daemon run with greylisting?)")
    store = GreylistStore(lifetime=lifetime)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            query = "SELECT key, value FROM entries WHERE kind = ? AND expires >= ? ORDER BY key"
            for key, value in db.execute(query, (ENTRIES, now)):
                first, last = value.split()
                store.entries[key] = Entry(float(first), float(last))
            for key, value in db.execute(query, (CLIENTS, now)):
                passes, last = value.split()
                store.clients[key] = Client(int(passes), float(last))
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"{path}: {exc}") from None
    return store


def text(answer: dict[str, Any]) -> list[str]:
    """The answer for a terminal: each client's passes, then how many triplets matched."""
    if "reset" in answer:
        return [f"reset {answer['reset']} greylist records"]
    lines = [
        f"{c['client']}  {c['passes']} passes" + ("  allowlisted" if c["allowlisted"] else "")
        for c in answer["clients"]
    ]
    lines += [
        f"{t['triplet']}  first seen {answer['now'] - t['first_seen']:.0f} s ago, "
        f"last {answer['now'] - t['last_seen']:.0f} s ago"
        for t in answer.get("triplet_entries", ())
    ]
    lines.append(f"{len(answer['clients'])} clients, {answer['triplets']} triplets")
    return lines


__all__ = ["handle", "read_file", "text"]
