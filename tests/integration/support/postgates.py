"""Real ``postgate run`` processes on the policy slots, and what they logged.

`Postgates` starts the daemon (through the shared `Daemon` of daemon.py) on
a TCP port or a UNIX socket, returns only once every listener answers a
policy request, and stops every daemon it started. `decision` reads back the
``decision`` event postgate logged for a request, so a test can quote the rule
and the answer postgate gave.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Sequence

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "conf" / "examples"


def list_entries(path: Path) -> list[str]:
    """Entries of a postgate list file: one per line, ``#`` comments, blank lines ignored."""
    if not path.exists():
        return []
    lines = (line.partition("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


@dataclass(frozen=True, slots=True)
class Listener:
    """A postgate endpoint: the Twisted string to listen on, and how to reach it."""

    endpoint: str
    address: tuple[str, int] | str
    family: int

    @classmethod
    def tcp(cls, port: int | None = None) -> Listener:
        port = free_port() if port is None else port
        return cls(f"tcp:{port}:interface=127.0.0.1", ("127.0.0.1", port), socket.AF_INET)

    @classmethod
    def unix(cls, path: Path, mode: str = "666") -> Listener:
        """Mode 666 by default: smtpd connects as user postfix (docs/protocol.md, Connections)."""
        return cls(f"unix:{path}:mode={mode}", str(path), socket.AF_UNIX)


PROBE = {"request": "smtpd_access_policy", "protocol_state": "CONNECT", "client_address": ""}


def answers(listener: Listener) -> bool:
    """True once a policy request on ``listener`` gets a reply."""
    try:
        with connect(listener.address, listener.family) as sock:
            return ask(sock, PROBE).startswith(b"action=")
    except OSError:
        return False


class Postgates:
    """Starts real ``postgate run`` processes and stops every one of them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.daemons: list[Daemon] = []

    def config(self, name: str, text: str) -> Path:
        path = self.directory / f"{name}.toml"
        path.write_text(text)
        return path

    def start(self, config: Path, listeners: Sequence[Listener]) -> Daemon:
        """Start postgate with ``config`` on ``listeners``; return once each one answers."""
        for listener in listeners:
            assert not answers(listener), f"{listener.endpoint} is served by someone else"
            if listener.family == socket.AF_UNIX:
                Path(str(listener.address)).unlink(missing_ok=True)
        daemon = Daemon(
            config,
            tuple(lst.endpoint for lst in listeners),
            log_path=self.directory / f"{config.stem}-{len(self.daemons)}.log",
        )
        self.daemons.append(daemon)
        daemon.start()
        for listener in listeners:
            wait_until(functools.partial(answers, listener), f"postgate on {listener.endpoint}")
        return daemon

    def copy_examples(self) -> Path:
        """A private copy of conf/examples, so a test can extend a list without touching it."""
        target = self.directory / "examples"
        if not target.exists():
            shutil.copytree(EXAMPLES, target)
        return target

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


def decisions(daemon: Daemon, **match: str) -> list[dict[str, Any]]:
    """The ``decision`` events in ``daemon``'s log whose fields equal ``match``."""
    found = []
    for line in daemon.log().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "decision" and match.items() <= event.items():
                found.append(event)
    return found


def decision(daemon: Daemon, **match: str) -> dict[str, Any]:
    """The one decision matching ``match``, waiting for its log line (bounded)."""
    wait_until(lambda: bool(decisions(daemon, **match)), f"a decision with {match}")
    [event] = decisions(daemon, **match)
    return event
