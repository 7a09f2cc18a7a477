"""The daemon's greylisting without Postfix: a SIGHUP keeps the triplets, a stop writes them.

The reload changes the delay: a triplet first seen before it is judged
under the new delay from its first sight, not seen anew; after a stop the
state file holds the triplet, and ``postgate state --greylist`` lists it.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import time
from typing import TYPE_CHECKING

from postgate.commands.state import main as state_main
from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

RULE = """
[[rules]]
id = "GREYLIST"
greylist = {{ delay = {delay} }}
action = "DEFER_IF_PERMIT 4.7.1 Greylisted, try again in {{retry}} seconds"
"""
REQUEST = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "client_address": "192.0.2.7",
    "client_name": "unknown",
    "sender": "alice@example.org",
    "recipient": "bob@example.com",
}


def retry(answer: bytes) -> int:
    found = re.fullmatch(
        rb"action=DEFER_IF_PERMIT 4.7.1 Greylisted, try again in (\d+) seconds\n\n", answer
    )
    assert found, answer
    return int(found.group(1))


def test_a_reload_keeps_the_triplets_and_a_stop_writes_them(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text(RULE.format(delay=300))
    port = free_port()
    with Daemon(config, (f"tcp:{port}:interface=127.0.0.1",)) as daemon:
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            first = retry(ask(sock, REQUEST))
            time.sleep(1.5)  # so that a triplet seen anew would show the whole delay
            config.write_text(RULE.format(delay=3600))
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log('"event":"config_reloaded"')
            after = retry(ask(sock, REQUEST))
        daemon.stop()
    assert 300 == first
    assert 3590 <= after <= 3599, after  # counted from the first sight before the reload
    out = io.StringIO()
    argv = ["show", "--greylist", "-c", str(config)]
    assert 0 == state_main(argv, out, io.StringIO())
    assert out.getvalue().startswith("192.0.2.0/24 alice@example.org bob@example.com  first seen")


def test_postgate_state_asks_the_running_daemon_for_its_triplets(tmp_path: Path) -> None:
    config = tmp_path / "p.toml"
    config.write_text('[control]\nsocket = "control.sock"\n' + RULE.format(delay=300))
    port = free_port()
    with Daemon(config, (f"tcp:{port}:interface=127.0.0.1",)) as daemon:
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            retry(ask(sock, REQUEST))
        out, err = io.StringIO(), io.StringIO()
        status = state_main(["list", "--greylist", "--json", "-c", str(config)], out, err)
        daemon.stop()
    assert 0 == status, err.getvalue()
    listed = json.loads(out.getvalue())
    assert (1, 1) == (listed["total"], listed["triplets"]), listed
