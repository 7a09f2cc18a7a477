"""The real daemon over real sockets: framing, concurrency, limits, signals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from postgate.wire.codec import encode_request
from tests.integration.support.daemon import Daemon, ask, connect, drive
from tests.integration.support.echo import conversation, echo_reply, request, rss_kib, write_config
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

TRANSPORTS = ["tcp", "tcp6", "unix"]


def endpoint(kind: str, tmp_path: Path) -> tuple[str, tuple[str, int] | str, int]:
    if kind == "tcp":
        port = free_port()
        return f"tcp:{port}:interface=127.0.0.1", ("127.0.0.1", port), socket.AF_INET
    if kind == "tcp6":
        port = free_port(socket.AF_INET6)
        return f"tcp6:{port}:interface=\\:\\:1", ("::1", port), socket.AF_INET6
    path = tmp_path / "policy.sock"
    return f"unix:{path}:mode=600", str(path), socket.AF_UNIX


class TestConcurrency:
    @pytest.mark.parametrize("chunk", [1, 16, 4096])
    @pytest.mark.parametrize("kind", TRANSPORTS)
    def test_many_lockstep_connections_get_their_own_replies_in_order(
        self, tmp_path: Path, kind: str, chunk: int
    ) -> None:
        """200 persistent connections x 50 requests each: every reply correct and in order."""
        listen, address, family = endpoint(kind, tmp_path)
        config = write_config(tmp_path, free_port())
        with Daemon(config, listen=(listen,)):
            answered, wrong = drive(address, family, 200, conversation, chunk)
        assert (10_000, []) == (answered, wrong[:3])


class TestLimits:
    def test_endless_line_is_cut_off_and_others_keep_being_answered(self, tmp_path: Path) -> None:
        """1 MiB without a newline closes that connection; memory stays flat; others unaffected."""
        port = free_port()
        with Daemon(write_config(tmp_path, port)) as daemon:
            assert daemon.proc is not None
            good = connect(("127.0.0.1", port), socket.AF_INET)
            assert echo_reply("echo", "a@x") == ask(good, request("a@x"))
            before = rss_kib(daemon.proc.pid)
            bad = connect(("127.0.0.1", port), socket.AF_INET)
            closed = _flood(bad, 1 << 20)
            after = rss_kib(daemon.proc.pid)
            assert echo_reply("echo", "b@x") == ask(good, request("b@x"))
            assert '"event":"protocol_error"' in daemon.log()
        assert closed
        assert after - before < 4096, (before, after)

    def test_garbage_on_one_connection_does_not_disturb_another(self, tmp_path: Path) -> None:
        """A request without request=smtpd_access_policy closes only its own connection."""
        port = free_port()
        with Daemon(write_config(tmp_path, port)):
            good = connect(("127.0.0.1", port), socket.AF_INET)
            bad = connect(("127.0.0.1", port), socket.AF_INET)
            bad.sendall(b"GET / HTTP/1.0\n\n")
            assert b"" == bad.recv(100)
            assert echo_reply("echo", "c@x") == ask(good, request("c@x"))

    def test_peer_outside_allow_list_is_refused(self, tmp_path: Path) -> None:
        """A TCP peer not in daemon.allow is disconnected before any request is read."""
        port = free_port()
        config = write_config(tmp_path, port)
        config.write_text(
            config.read_text().replace("[daemon]", '[daemon]\nallow = ["10.0.0.0/8"]')
        )
        with Daemon(config) as daemon:
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            sock.sendall(encode_request(request("d@x")))
            assert b"" == _recv_or_reset(sock)
            assert '"reason":"not in daemon.allow"' in daemon.log()


def _flood(sock: socket.socket, total: int) -> bool:
    """Send ``total`` bytes without a newline; True when the daemon closed on us."""
    block = b"x" * 65536
    try:
        for _ in range(total // len(block)):
            sock.sendall(block)
    except (BrokenPipeError, ConnectionResetError):
        return True
    return _recv_or_reset(sock) == b""


def _recv_or_reset(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return b""


class TestSignals:
    def test_reload_with_broken_config_keeps_old_rules(self, tmp_path: Path) -> None:
        """SIGHUP with a broken config logs the errors and keeps answering with the old rules."""
        port = free_port()
        config = write_config(tmp_path, port, level="info")
        with Daemon(config) as daemon:
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            config.write_text(config.read_text() + "\n[[rules]]\nid = 'BAD'\nbogus = 1\n")
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log('"event":"config_reload_failed"')
            assert echo_reply("echo", "e@x") == ask(sock, request("e@x"))
        assert "rules[1]" in daemon.log()

    def test_reload_applies_to_next_request_on_open_connection(self, tmp_path: Path) -> None:
        """SIGHUP with a good config: the very next request on an open connection sees it."""
        port = free_port()
        config = write_config(tmp_path, port, level="info")
        with Daemon(config) as daemon:
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            assert echo_reply("echo", "f@x") == ask(sock, request("f@x"))
            write_config(tmp_path, port, word="fresh", level="info")
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log('"event":"config_reloaded"')
            assert echo_reply("fresh", "g@x") == ask(sock, request("g@x"))

    def test_reloads_in_quick_succession_end_with_the_latest_file(self, tmp_path: Path) -> None:
        """Two SIGHUPs back to back never overlap, and the file's last state wins.

        The kernel keeps one pending SIGHUP, not two: a second one that
        arrives before the first is handled makes a single reload, which
        then reads the latest file. So one reload or two, never more, and
        the daemon ends up answering from the third file.
        """
        port = free_port()
        config = write_config(tmp_path, port, level="info")
        with Daemon(config) as daemon:
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            write_config(tmp_path, port, word="second", level="info")
            daemon.signal(signal.SIGHUP)
            write_config(tmp_path, port, word="third", level="info")
            daemon.signal(signal.SIGHUP)
            want = echo_reply("third", "h@x")
            deadline = time.monotonic() + 20.0
            while (got := ask(sock, request("h@x"))) != want and time.monotonic() < deadline:
                time.sleep(0.02)
            reloads = daemon.log().count('"event":"config_reloaded"')
            assert (want, True) == (got, reloads in (1, 2))

    def test_sigterm_answers_requests_in_flight_and_exits_zero(self, tmp_path: Path) -> None:
        """Requests sent just before SIGTERM (one still half-sent) are all answered; exit 0."""
        port = free_port()
        with Daemon(write_config(tmp_path, port)) as daemon:
            socks = [connect(("127.0.0.1", port), socket.AF_INET) for _ in range(50)]
            for i, sock in enumerate(socks):
                sock.sendall(encode_request(request(f"t{i}@x")))
            half = encode_request(request("half@x"))
            late = connect(("127.0.0.1", port), socket.AF_INET)
            late.sendall(half[:20])
            time.sleep(0.2)
            daemon.signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.2)
            late.sendall(half[20:])
            replies = [_read_reply(sock) for sock in socks]
            late_reply = _read_reply(late)
            status = daemon.wait()
            took = time.monotonic() - signalled
        assert [echo_reply("echo", f"t{i}@x") for i in range(50)] == replies
        assert echo_reply("echo", "half@x") == late_reply
        assert (0, True) == (status, took < 5.0), took


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class TestStart:
    def test_bind_failure_stops_the_start_with_a_message(self, tmp_path: Path) -> None:
        """A port already in use ends `postgate run` with a non-zero status and says why."""
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port)
        result = subprocess.run(
            [sys.executable, "-m", "postgate", "run", "-c", str(config)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        holder.close()
        assert result.returncode != 0
        assert b"cannot start" in result.stderr
        assert b"Address already in use" in result.stderr + result.stdout
