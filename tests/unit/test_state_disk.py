"""The write-behind file: rows survive a close and reopen, expiry, deletion, batching."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from postgate.state.disk import DiskStore

if TYPE_CHECKING:
    from pathlib import Path


def test_rows_put_before_close_are_there_after_reopen(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "sub" / "state.sqlite", clock=lambda: 100.0)
    store.put("limit", "a", "[1]", 200.0)
    store.put("limit", "b", "[2]", 200.0)
    store.put("grey", "a", "x", 200.0)
    store.delete("limit", "b")
    store.close()
    again = DiskStore(tmp_path / "sub" / "state.sqlite")
    assert [("a", "[1]", 200.0)] == list(again.rows("limit", 150.0))
    assert [("a", "x", 200.0)] == list(again.rows("grey", 150.0))
    again.close()


def test_expired_rows_are_not_loaded(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "s.sqlite", clock=lambda: 5.0)
    store.put("limit", "old", "[1]", 10.0)
    store.put("limit", "new", "[1]", 1000.0)
    store.close()
    again = DiskStore(tmp_path / "s.sqlite")
    assert ["new"] == [key for key, _, _ in again.rows("limit", 500.0)]
    again.close()


def test_the_newest_value_of_a_row_wins_and_a_batch_is_one_write(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "s.sqlite")
    for n in range(100):
        store.put("limit", "k", str(n), 1e12)
    assert 1 == store.pending
    store.flush()
    assert (0, 1) == (store.pending, store.written)
    store.close()
    again = DiskStore(tmp_path / "s.sqlite")
    assert [("k", "99", 1e12)] == list(again.rows("limit", 0.0))
    again.close()


def test_the_writer_thread_writes_within_a_second(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "s.sqlite")
    store.start()
    store.put("limit", "k", "1", 1e12)
    reader = sqlite3.connect(tmp_path / "s.sqlite")
    found: list[object] = []
    for _ in range(40):  # bounded: 2 s at most
        found = reader.execute("SELECT value FROM entries").fetchall()
        if found:
            break
        store._stop.wait(0.05)
    reader.close()
    store.close()
    assert [("1",)] == found


def test_a_failed_write_keeps_the_rows_and_reports_once(tmp_path: Path) -> None:
    errors: list[Exception] = []
    recovered: list[bool] = []
    store = DiskStore(
        tmp_path / "s.sqlite", on_error=errors.append, on_recovered=lambda: recovered.append(True)
    )
    store.put("limit", "k", "1", 1e12)
    blocker = sqlite3.connect(tmp_path / "s.sqlite", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    store._db.execute("PRAGMA busy_timeout=0")
    store.flush()
    store.flush()
    assert (1, 1, []) == (len(errors), store.pending, recovered)
    blocker.execute("ROLLBACK")
    blocker.close()
    store.flush()
    assert (0, [True]) == (store.pending, recovered)
    store.close()
