"""The daemon's limits without Postfix: a SIGHUP that changes a limit keeps the counts.

Requests are written as Postfix writes them (RCPT, then END-OF-MESSAGE of the
same ``instance``); the reload lowers the limit, and the counts charged before
it are judged under the new one; the state file holds them after a stop.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from postgate.commands.state import main as state_main
from postgate.state.report import read_file
from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

RULE = """
[[rules]]
id = "USER_RATE"
sasl_username = {{ present = true }}
limit = {{ key = ["sasl_username"], windows = ["{n} per hour"] }}
"""


def message(sock: socket.socket, n: int) -> bytes:
    base = {
        "request": "smtpd_access_policy",
        "sasl_username": "alice",
        "client_address": "192.0.2.7",
        "client_port": "41000",
        "instance": f"abc.6b0b7c2f.1bba5.{n}",
    }
    answer = ask(sock, base | {"protocol_state": "RCPT", "recipient": "r@example.com"})
    if answer == b"action=DUNNO\n\n":
        ask(sock, base | {"protocol_state": "END-OF-MESSAGE", "recipient_count": "1"})
    return answer


def test_a_reload_that_lowers_a_limit_keeps_the_counts(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text(RULE.format(n=5))
    port = free_port()
    with Daemon(config, (f"tcp:{port}:interface=127.0.0.1",)) as daemon:
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            before = [message(sock, n) for n in range(3)]
            config.write_text(RULE.format(n=3))
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log('"event":"config_reloaded"')
            after = message(sock, 3)
        daemon.stop()
    assert [b"action=DUNNO\n\n"] * 3 == before
    assert after.startswith(b"action=450 4.7.1 Rate limit exceeded"), after
    store = read_file(tmp_path / "state" / "state.sqlite", 0.0)
    assert ["alice"] == [e["key"] for e in store.entries()]


def test_a_stateless_config_opens_no_file_until_a_reload_adds_a_limit(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text('[[rules]]\nid = "R"\nhelo_name = "x"\naction = "DUNNO"\n')
    port = free_port()
    with Daemon(config, (f"tcp:{port}:interface=127.0.0.1",)) as daemon:
        before = (tmp_path / "state").exists()
        config.write_text(RULE.format(n=1))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log('"event":"state_loaded"')
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            answers = [message(sock, n) for n in range(2)]
        daemon.stop()
    assert (False, True) == (before, (tmp_path / "state" / "state.sqlite").exists())
    assert answers[0] == b"action=DUNNO\n\n"
    assert answers[1].startswith(b"action=450 4.7.1"), answers


def test_postgate_state_lists_and_resets_the_running_daemons_counters(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    socket_path = tmp_path / "control.sock"
    config.write_text(f'[control]\nsocket = "{socket_path}"\n' + RULE.format(n=1))
    port = free_port()
    with Daemon(config, (f"tcp:{port}:interface=127.0.0.1",)) as daemon:
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            first = [message(sock, n) for n in range(2)]
            listed, reset = io.StringIO(), io.StringIO()
            listing = state_main(["-c", str(config), "--json"], listed, io.StringIO())
            resetting = state_main(
                ["-c", str(config), "reset", "--key", "alice"], reset, io.StringIO()
            )
            after = message(sock, 2)
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "postgate", "status", "-c", str(config), "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        daemon.stop()
    assert [b"action=DUNNO\n\n"] == first[:1]
    assert first[1].startswith(b"action=450"), first
    assert (0, 0) == (listing, resetting)
    entries = json.loads(listed.getvalue())["entries"]
    assert [("USER_RATE", "alice", {"3600": 1})] == [
        (e["rule"], e["key"], e["counts"]) for e in entries
    ]
    assert "reset 1 counters" == reset.getvalue().strip()
    assert b"action=DUNNO\n\n" == after
    assert ("embedded", 1) == (status["state"]["backend"], status["state"]["counters"])
