"""``postgate state``: list, show and reset rate-limit counters, as JSON-ready data.

The same functions answer the running daemon's control socket (on its
in-memory store) and read a state file directly when no daemon answers
(list and show only: a running daemon would write its own counts back).
Selections: by rule id, by exact key, by key prefix; all optional.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any, Final

from postgate.state import windows
from postgate.state.limits import KIND, LimitStore

if TYPE_CHECKING:
    from pathlib import Path

MAX_ENTRIES: Final = 1000  # entries in one answer; "total" says how many matched
ACTIONS: Final = ("list", "show", "reset")


class StateError(ValueError):
    """A request the store cannot answer; the text says why."""


def select(args: dict[str, Any]) -> tuple[str, str, str]:
    """(rule, key, prefix) from a request's args, each a string or absent."""
    found = []
    for name in ("rule", "key", "prefix"):
        value = args.get(name) or ""
        if not isinstance(value, str):
            raise StateError(f"{name} must be a string")
        found.append(value)
    return found[0], found[1], found[2]


def listing(store: LimitStore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """The matching entries with each window's count now; ``show`` adds when each empties."""
    rule, key, prefix = select(args)
    detail = args.get("action") == "show"
    entries = store.entries(rule, key, prefix)
    shown = [_entry(e, now, detail=detail) for e in entries[:MAX_ENTRIES]]
    return {"entries": shown, "total": len(entries), "truncated": len(entries) > MAX_ENTRIES}


def _entry(entry: dict[str, object], now: float, *, detail: bool) -> dict[str, Any]:
    rings = entry["windows"]
    assert isinstance(rings, dict)  # built by LimitStore.entries
    counts = {s: windows.count(ring, int(s), now) for s, ring in rings.items()}
    found: dict[str, Any] = {"rule": entry["rule"], "key": entry["key"], "counts": counts}
    found["reserved"] = entry.get("reserved", 0)
    if detail:
        found["empty_at"] = {s: windows.expires(ring, int(s)) for s, ring in rings.items()}
    return found


def handle(store: LimitStore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """One ``state`` request: ``{"action": "list"|"show"|"reset", "rule", "key", "prefix"}``."""
    action = args.get("action", "list")
    if action not in ACTIONS:
        raise StateError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if action == "reset":
        rule, key, prefix = select(args)
        if not (rule or key or prefix or args.get("all") is True):
            raise StateError("reset needs a rule, a key or a prefix (or all)")
        return {"reset": store.reset(rule, key, prefix)}
    return listing(store, args, now)


def read_file(path: Path, now: float) -> LimitStore:
    """The counters a state file holds, read-only (the daemon may be writing it)."""
    if not path.exists():
        raise StateError(f"{path}: no state file (has the daemon run with limits?)")
    store = LimitStore()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            query = "SELECT key, value FROM entries WHERE kind = ? AND expires >= ?"
            for row, value in db.execute(query, (KIND, now)):
                store.counters[row] = json.loads(value)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateError(f"{path}: {exc}") from None
    return store


__all__ = ["ACTIONS", "MAX_ENTRIES", "StateError", "handle", "listing", "read_file"]
