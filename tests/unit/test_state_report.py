"""``postgate state`` on a store and on a state file: list, show, reset, JSON."""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING

import pytest

from postgate.commands.state import main, show_lines
from postgate.config.load import load_config
from postgate.state.disk import DiskStore
from postgate.state.limits import LimitStore
from postgate.state.report import StateError, handle

if TYPE_CHECKING:
    from pathlib import Path

NOW = time.time()


def filled(disk: DiskStore | None = None) -> LimitStore:
    store = LimitStore(disk)
    store.charge("USER_RATE", (3600, 86400), (("alice", 2), ("bob", 1)), "", NOW)
    store.charge("NET", (3600,), (("192.0.2.0/24", 5),), "", NOW)
    store.reserve("USER_RATE", "alice", "i1", "s1", 1, NOW)
    return store


def test_list_selects_by_rule_key_and_prefix() -> None:
    store = filled()
    every = handle(store, {}, NOW)
    assert (3, False) == (every["total"], every["truncated"])
    alice = handle(store, {"rule": "USER_RATE", "key": "alice"}, NOW)["entries"]
    assert [
        {"rule": "USER_RATE", "key": "alice", "counts": {"3600": 2, "86400": 2}, "reserved": 1}
    ] == alice
    assert ["192.0.2.0/24"] == [e["key"] for e in handle(store, {"prefix": "192."}, NOW)["entries"]]


def test_reset_forgets_the_matching_counters_only() -> None:
    store = filled()
    assert {"reset": 1} == handle(store, {"action": "reset", "key": "alice"}, NOW)
    left = {e["key"]: e["counts"] for e in handle(store, {}, NOW)["entries"]}
    # alice's message in flight still reserves; her counts are gone
    assert {"alice": {}, "bob": {"3600": 1, "86400": 1}, "192.0.2.0/24": {"3600": 5}} == left
    with pytest.raises(StateError):
        handle(store, {"action": "reset"}, NOW)
    assert {"reset": 2} == handle(store, {"action": "reset", "all": True}, NOW)


def test_the_command_reads_the_state_file(tmp_path: Path) -> None:
    disk = DiskStore(tmp_path / "state" / "state.sqlite")
    filled(disk)
    disk.close()
    config = tmp_path / "p.toml"
    config.write_text(
        '[[rules]]\nid = "USER_RATE"\n'
        'limit = { key = ["sasl_username"], windows = ["3 per hour", "20 per day"] }\n'
    )
    out = io.StringIO()
    assert 0 == main(["-c", str(config), "--rule", "USER_RATE"], out, io.StringIO())
    assert [
        "USER_RATE  alice  2 of 3 per hour, 2 of 20 per day",
        "USER_RATE  bob  1 of 3 per hour, 1 of 20 per day",
        "2 counters",
    ] == out.getvalue().splitlines()
    out = io.StringIO()
    assert 0 == main(["-c", str(config), "show", "--json", "--key", "bob"], out, io.StringIO())
    assert {"3600", "86400"} == set(json.loads(out.getvalue())["entries"][0]["empty_at"])
    err = io.StringIO()
    assert 69 == main(["-c", str(config), "reset", "--all"], io.StringIO(), err)
    assert 1 == main(["-c", str(config), "--key", "nobody"], io.StringIO(), io.StringIO())


def test_show_tells_each_limit_rule_its_counters(tmp_path: Path) -> None:
    disk = DiskStore(tmp_path / "state" / "state.sqlite")
    filled(disk)
    disk.close()
    path = tmp_path / "p.toml"
    path.write_text(
        '[[rules]]\nid = "USER_RATE"\n'
        'limit = { key = ["sasl_username"], windows = ["3 per hour", "20 per day"] }\n'
    )
    assert [
        f"state ({tmp_path / 'state' / 'state.sqlite'}):",
        "    USER_RATE: 2 keys counted; fullest: alice, 2 of 3 per hour, 2 of 20 per day",
    ] == show_lines(load_config(path), NOW)
