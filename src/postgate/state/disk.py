"""Write-behind persistence of the embedded state: one SQLite file, written by one thread.

The embedded store keeps its state in memory on the reactor thread; this
file only lets it survive a restart. Writes are queued in memory (the
newest value of a row wins) and written in one transaction per batch by a
background thread, at most `FLUSH_EVERY` seconds behind, so a crash loses
at most the last second of changes and the reactor never waits for a disk.
The file uses SQLite's WAL journal (readers never block the writer).

API, for any state kind (rate-limit counters, greylist entries...)::

    store = DiskStore(path)             # opens or creates the file (and its directory)
    for key, value, expires in store.rows("grey", now):   # at start, before serving
        ...                             # rows of one kind whose expiry is not past
    store.start()                       # the writer thread
    store.put("grey", key, value, expires)  # any thread; no I/O; value is text
    store.delete("grey", key)
    store.close()                       # writes what is queued, stops the thread

* A row is (kind, key) -> (value, expires): ``value`` is text the caller
  serialises (JSON, say), ``expires`` wall-clock epoch seconds after which
  the row is dropped at load and purged from the file once a minute.
* ``rows`` and the constructor do blocking I/O: call them before the
  reactor runs (and ``rows`` before ``start``). ``put`` and ``delete`` only take a lock.
* Write failures (a full disk) keep the queued rows for the next attempt and
  are reported once per outage through ``on_error`` / ``on_recovered``.
* Several providers share one store (one file, one thread) by using their
  own ``kind``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

FLUSH_EVERY: Final = 0.5  # seconds between batches: a crash loses at most about this
PURGE_EVERY: Final = 60.0  # seconds between deletions of expired rows
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS entries (kind TEXT NOT NULL, key TEXT NOT NULL, "
    "value TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID"
)
_DELETE: Final = object()  # queued in place of a value: remove the row


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL under WAL: a process crash loses nothing committed; only a power
    # loss can lose the last batches, which the write-behind loses anyway.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SCHEMA)
    return db


class DiskStore:
    """Rows (kind, key) -> (value, expires), written behind by one thread."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[Exception], None] = lambda _: None,
        on_recovered: Callable[[], None] = lambda: None,
    ) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._db = _connect(path)
        self._clock = clock
        self._on_error, self._on_recovered = on_error, on_recovered
        self._lock = threading.Lock()
        self._queued: dict[tuple[str, str], tuple[str, float] | object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._purged = 0.0
        self.written = 0  # rows written so far, for tests and status

    def rows(self, kind: str, now: float) -> Iterator[tuple[str, str, float]]:
        """(key, value, expires) of every row of ``kind`` that has not expired."""
        query = "SELECT key, value, expires FROM entries WHERE kind = ? AND expires >= ?"
        yield from self._db.execute(query, (kind, now))

    def put(self, kind: str, key: str, value: str, expires: float) -> None:
        with self._lock:
            self._queued[kind, key] = (value, expires)

    def delete(self, kind: str, key: str) -> None:
        with self._lock:
            self._queued[kind, key] = _DELETE

    @property
    def pending(self) -> int:
        return len(self._queued)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="postgate-state", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued and stop; the store is unusable afterwards."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.flush()
        self._db.close()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """One batch: every queued row in one transaction (the writer thread's job)."""
        with self._lock:
            batch, self._queued = self._queued, {}
        now = self._clock()
        try:
            self._write(batch, now)
        except sqlite3.Error as exc:
            with self._lock:  # newer values queued meanwhile win over the failed batch
                self._queued = batch | self._queued
            if not self._failing:
                self._failing = True
                self._on_error(exc)
            return
        if self._failing:
            self._failing = False
            self._on_recovered()

    def _write(self, batch: dict[tuple[str, str], tuple[str, float] | object], now: float) -> None:
        if not batch and now - self._purged < PURGE_EVERY:
            return
        puts = [(k, key, *v) for (k, key), v in batch.items() if isinstance(v, tuple)]
        gone = [(k, key) for (k, key), v in batch.items() if v is _DELETE]
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", puts)
            db.executemany("DELETE FROM entries WHERE kind = ? AND key = ?", gone)
            if now - self._purged >= PURGE_EVERY:
                db.execute("DELETE FROM entries WHERE expires < ?", (now,))
                self._purged = now
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self.written += len(batch)


__all__ = ["FLUSH_EVERY", "DiskStore"]
