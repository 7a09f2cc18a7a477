"""The control socket and ``postgate status`` against a running daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from postgate.commands.control_client import ControlError, request
from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.needs import need
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

RULES = """
[[rules]]
id = "WATCHED"
mode = "observe"
helo_name = "localhost"
action = "DEFER_IF_PERMIT would wait"

[[rules]]
id = "HELO_LOCALHOST"
helo_name = "localhost"
action = "554 5.7.1 No"

[[rules]]
id = "TRUSTED"
sender = "boss@example.org"
action = "OK"
"""


def postgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postgate", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Daemon, Path, int]]:
    port = free_port()
    config = tmp_path / "postgate.toml"
    config.write_text(
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        '[control]\nsocket = "control.sock"\n' + RULES
    )
    with Daemon(config) as daemon:
        yield daemon, config, port


def traffic(port: int) -> None:
    """3 x 5xx from HELO_LOCALHOST, 2 x OK from TRUSTED, 1 x DUNNO (DEFAULT)."""
    sock = connect(("127.0.0.1", port), socket.AF_INET)
    with sock:
        for _ in range(3):
            ask(
                sock,
                {
                    "request": "smtpd_access_policy",
                    "protocol_state": "RCPT",
                    "helo_name": "localhost",
                },
            )
        for _ in range(2):
            ask(
                sock,
                {
                    "request": "smtpd_access_policy",
                    "protocol_state": "MAIL",
                    "sender": "boss@example.org",
                },
            )
        ask(
            sock,
            {"request": "smtpd_access_policy", "protocol_state": "DATA", "sender": "x@example.org"},
        )


class TestStatus:
    def test_json_report_counts_per_rule_and_state(self, running: tuple[Daemon, Path, int]) -> None:
        _daemon, config, port = running
        traffic(port)
        done = postgate("status", "-c", str(config), "--json")
        assert (0, "") == (done.returncode, done.stderr)
        report = json.loads(done.stdout)
        assert report["config"] == str(config)
        assert report["rules"] == 3
        assert report["observed"] == [{"rule": "WATCHED", "class": "4xx", "count": 3}]
        assert report["requests"]["answered"] == 6
        assert report["requests"]["by_state"] == {"RCPT": 3, "MAIL": 2, "DATA": 1}
        assert report["decisions"] == [
            {"rule": "HELO_LOCALHOST", "class": "5xx", "count": 3},
            {"rule": "TRUSTED", "class": "OK", "count": 2},
            {"rule": "DEFAULT", "class": "DUNNO", "count": 1},
        ]
        assert report["listeners"]["policy"] == [f"tcp:{port}:interface=127.0.0.1"]
        assert report["last_reload"] is None
        assert report["state"] is None
        assert report["recording"]["enabled"] is False

    def test_human_report_and_a_failed_reload(self, running: tuple[Daemon, Path, int]) -> None:
        daemon, config, port = running
        traffic(port)
        config.write_text(config.read_text() + "\n[[rules]]\nid = 'BROKEN'\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log('"event":"config_reload_failed"')
        done = postgate("status", "-c", str(config))
        assert (0, "") == (done.returncode, done.stderr)
        lines = done.stdout.splitlines()
        assert lines[0].startswith("postgate ")
        assert any(line.startswith("reload      FAILED at ") and "BROKEN" in line for line in lines)
        assert "requests    6 answered, 0 errors: MAIL 2, RCPT 3, DATA 1" in lines
        table = lines[lines.index("decisions since start:") + 1 :][:3]
        assert [line.split() for line in table] == [
            ["3", "5xx", "HELO_LOCALHOST"],
            ["2", "OK", "TRUSTED"],
            ["1", "DUNNO", "DEFAULT"],
        ]
        start = lines.index('observed (would have answered; mode = "observe"):')
        assert ["3", "4xx", "WATCHED"] == lines[start + 1].split()

    def test_counts_survive_a_reload_under_the_class_they_had(
        self, running: tuple[Daemon, Path, int]
    ) -> None:
        daemon, config, port = running
        traffic(port)
        config.write_text(config.read_text().replace('action = "OK"', 'action = "HOLD"'))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log('"event":"config_reloaded"')
        traffic(port)
        report = json.loads(postgate("status", "-c", str(config), "--json").stdout)
        assert "ok" == report["last_reload"]["result"]
        trusted = [row for row in report["decisions"] if row["rule"] == "TRUSTED"]
        assert [
            {"rule": "TRUSTED", "class": "OK", "count": 2},
            {"rule": "TRUSTED", "class": "other", "count": 2},
        ] == sorted(trusted, key=lambda row: row["class"])
        assert 12 == report["requests"]["answered"]

    def test_without_a_daemon_exit_69(self, tmp_path: Path) -> None:
        done = postgate("status", "--socket", str(tmp_path / "none.sock"))
        assert (69, "") == (done.returncode, done.stdout)
        assert "no such socket" in done.stderr


class TestControlSocket:
    def test_socket_mode_and_bad_requests(self, running: tuple[Daemon, Path, int]) -> None:
        _daemon, config, _port = running
        path = config.parent / "control.sock"
        assert 0o660 == path.stat().st_mode & 0o777
        with pytest.raises(ControlError, match="unknown command 'nope'; known: state, status"):
            request(path, "nope")
        for line, reason in [
            (b"not json\n", b"not a JSON line"),
            (b'["status"]\n', b'expected {"command"'),
            (b'{"command": "status", "args": 1}\n', b"args must be an object"),
            (b"x" * 70_000, b"request over 65536 bytes"),
        ]:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(line)
                reply = json.loads(sock.makefile("rb").readline())
            assert reply["ok"] is False
            assert reason.decode() in reply["error"]

    def test_silent_client_is_cut_off(self, running: tuple[Daemon, Path, int]) -> None:
        _daemon, config, _port = running
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(15)
            sock.connect(str(config.parent / "control.sock"))
            assert b"" == sock.recv(100)  # closed after the timeout, without a reply

    def test_other_users_are_refused_by_credentials(
        self, running: tuple[Daemon, Path, int]
    ) -> None:
        if os.getuid() != 0:  # fails under CI=true, where the suite runs as root
            need("connecting as another user needs root")
        daemon, config, _port = running
        path = config.parent / "control.sock"
        path.chmod(0o666)  # past the file mode: the credentials check must still refuse
        config.parent.chmod(0o755)
        assert b"" == _as_nobody(path)
        daemon.wait_for_log('"listener":"control"')
        assert "peer not in control.allow_users or control.allow_groups" in daemon.log()


def _as_nobody(path: Path) -> bytes:
    """What a process of user nobody reads after asking for the status (forked, no exec)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.chdir(path.parent)  # a relative name: the tmp dirs above are root's alone
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path.name)
                try:
                    sock.sendall(b'{"command": "status"}\n')
                    got = sock.recv(100)
                except (ConnectionResetError, BrokenPipeError):  # cut off: as refused as a close
                    got = b""
                os.write(write, b"<" + got + b">")
            code = 0
        except BaseException as exc:  # told to the parent
            os.write(write, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        got = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, got
    return got[1:-1]
