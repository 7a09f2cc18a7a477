"""The daemon's embedded state: opened when a ruleset needs it, faults logged, never fatal."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from structlog.testing import capture_logs

from postgate.config.load import load_config
from postgate.daemon.state import EmbeddedState

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.config.load import Config

LIMIT = """
[state]
directory = "{directory}"

[[rules]]
id = "R"
limit = {{ key = ["sasl_username"], windows = ["2 per hour"] }}
"""


def config(tmp_path: Path, directory: str = "state") -> Config:
    path = tmp_path / "p.toml"
    path.write_text(LIMIT.format(directory=directory))
    return load_config(path)


def test_a_stateless_config_opens_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nid = "R"\nhelo_name = "x"\naction = "DUNNO"\n')
    state = EmbeddedState(load_config(path))
    assert (None, False) == (state.disk, (tmp_path / "state").exists())
    assert state.status() is None  # postgate status: no state backend


def test_counters_survive_a_close_and_a_new_start(tmp_path: Path) -> None:
    first = EmbeddedState(config(tmp_path))
    first.store.charge("R", (3600,), (("alice", 2),), "", time.time())
    first.close()
    with capture_logs() as logs:
        again = EmbeddedState(config(tmp_path))
    loaded = [e for e in logs if e["event"] == "state_loaded"]
    assert [{"limit": 1, "greylist": 0}] == [e["rows"] for e in loaded]
    assert {"3600": 2} == again.command({"key": "alice"})["entries"][0]["counts"]
    again.close()


def test_a_damaged_row_is_logged_and_the_rest_serves(tmp_path: Path) -> None:
    EmbeddedState(config(tmp_path)).close()
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite")
    db.execute("INSERT INTO entries VALUES ('limit', 'R:3600:bob', 'not json', 1e12)")
    db.commit()
    db.close()
    with capture_logs() as logs:
        state = EmbeddedState(config(tmp_path))
    assert ["state_not_loaded", "state_loaded"] == [e["event"] for e in logs]
    assert state.disk is not None
    state.close()


def test_a_directory_that_cannot_be_made_keeps_the_state_in_memory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with capture_logs() as logs:
        state = EmbeddedState(config(tmp_path, "file/sub"))
    assert ["state_not_persisted"] == [e["event"] for e in logs]
    status = state.status()
    assert status is not None
    assert (None, None, "embedded") == (state.disk, status["file"], status["backend"])
    state.close()
