"""The daemon as an admin meets it: a start that fails, a reload, a question by hand."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.integration.support.daemon import Daemon
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

RULES = '[[rules]]\nid = "HELO_LOCALHOST"\nhelo_name = "localhost"\naction = "554 5.7.1 No"\n'


def postgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postgate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class TestStartFailure:
    """Point 6: a daemon that cannot start says why in one line and exits non-zero."""

    def test_busy_port_is_one_line_without_traceback(self, tmp_path: Path) -> None:
        config = tmp_path / "postgate.toml"
        config.write_text(RULES)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            done = postgate("run", "-c", str(config), "--listen", f"tcp:{port}:interface=127.0.0.1")
        lines = (done.stdout + done.stderr).splitlines()
        assert (1, 1) == (done.returncode, len(lines)), lines
        assert lines[0].startswith("postgate: cannot start: ")
        assert "Address already in use" in lines[0]

    def test_bad_listen_option_is_refused_before_start(self, tmp_path: Path) -> None:
        config = tmp_path / "postgate.toml"
        config.write_text(RULES)
        done = postgate("run", "-c", str(config), "--listen", "127.0.0.1:32045")
        assert (2, "") == (done.returncode, done.stdout)
        expected = (
            "postgate: --listen '127.0.0.1:32045': endpoint type '127.0.0.1' is not one of tcp, "
            "tcp6, unix, systemd; for an address and port write tcp:32045:interface=127.0.0.1"
        )
        assert [expected] == done.stderr.splitlines()


class TestReloadListen:
    """Point 8: only a listen that differs from the running one needs a restart."""

    def test_reload_to_the_running_listen_logs_no_restart(self, tmp_path: Path) -> None:
        running = f"tcp:{free_port()}:interface=127.0.0.1"
        config = tmp_path / "postgate.toml"
        config.write_text(RULES)
        with Daemon(config, listen=(running,)) as daemon:
            config.write_text(f'[daemon]\nlisten = ["{running}"]\n' + RULES)
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log('"event":"config_reloaded"')
            other = f"tcp:{free_port()}:interface=127.0.0.1"
            config.write_text(f'[daemon]\nlisten = ["{other}"]\n' + RULES)
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log('"event":"config_reloaded"', count=2)
            log = daemon.log()
        needs = [line for line in log.splitlines() if "setting_needs_restart" in line]
        assert 1 == len(needs), needs
        assert '"setting":"daemon.listen"' in needs[0]


class TestAsk:
    """Point 10: `postgate ask` is the hand query, without netcat."""

    def test_ask_prints_the_answer_from_arguments_and_stdin(self, tmp_path: Path) -> None:
        port = free_port()
        config = tmp_path / "postgate.toml"
        config.write_text(f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n' + RULES)
        with Daemon(config):
            by_args = postgate(
                "ask", "-c", str(config), "protocol_state=RCPT", "helo_name=localhost"
            )
            by_stdin = postgate(
                "ask", "--server", f"127.0.0.1:{port}", stdin="protocol_state=RCPT\nhelo_name=x\n"
            )
        assert (0, "action=554 5.7.1 No\n", "") == (
            by_args.returncode,
            by_args.stdout,
            by_args.stderr,
        )
        assert (0, "action=DUNNO\n") == (by_stdin.returncode, by_stdin.stdout)

    def test_ask_without_a_daemon_says_so(self, tmp_path: Path) -> None:
        done = postgate("ask", "--server", f"127.0.0.1:{free_port()}", "helo_name=x")
        assert (69, "") == (done.returncode, done.stdout)
        assert "Connection refused" in done.stderr
