"""The real daemon against peers that misbehave: bounds that hold, and answers that still leave."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import orjson

from postgate.wire.codec import encode_request
from tests.integration.support.daemon import Daemon, connect, drive
from tests.integration.support.echo import (
    conversation,
    echo_reply,
    request,
    rss_kib,
    write_config,
)
from tests.integration.support.net import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

# A request whose reply is long (the recipient comes back in it), so that a
# peer that does not read makes the daemon's output pile up fast.
LONG = "x" * 200 + "@example.com"


def unix_config(tmp_path: Path, socket_path: Path, users: list[str]) -> Path:
    """A config of its own directory, so each daemon has a log of its own."""
    (tmp_path / users[0]).mkdir()
    path = tmp_path / users[0] / "postgate.toml"
    path.write_text(
        f'[daemon]\nlisten = ["unix:{socket_path}:mode=666"]\nallow_users = {users!r}\n\n'
        '[[rules]]\nid = "ECHO"\naction = "550 5.7.1 echo {recipient}"\n'
    )
    return path


def read_replies(sock: socket.socket, count: int, timeout: float = 30.0) -> bytes:
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    seen = 0
    while seen < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        # A reply never holds a blank line, and one arrives split at worst in two.
        seen += (chunks[-1][-1:] + chunk).count(b"\n\n") if chunks else chunk.count(b"\n\n")
        chunks.append(chunk)
    return b"".join(chunks)


class TestPeersThatDoNotRead:
    def test_a_pipelining_peer_that_never_reads_is_paused_not_buffered(
        self, tmp_path: Path
    ) -> None:
        port = free_port()
        one = encode_request(request(LONG))
        burst = one * 2000
        with Daemon(write_config(tmp_path, port)) as daemon:
            assert daemon.proc is not None
            probe = connect(("127.0.0.1", port), socket.AF_INET)
            probe.sendall(one)
            reply = read_replies(probe, 1)  # the value comes back shortened
            before = rss_kib(daemon.proc.pid)
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            sock.setblocking(False)  # noqa: FBT003 - socket's own API
            sent, deadline = 0, time.monotonic() + 5.0
            while time.monotonic() < deadline and sent < 400 * len(burst):
                try:
                    sent += sock.send(burst[sent % len(burst) :])
                except BlockingIOError:
                    time.sleep(0.01)
            time.sleep(0.5)
            grown = rss_kib(daemon.proc.pid) - before
            complete = sent // len(one)
            replies = read_replies(sock, complete)
            sock.close()
            daemon.wait_for_log('"event":"peer_not_reading"')
            warned = daemon.log().count('"event":"peer_not_reading"')
        assert (True, True) == (sent < 64 << 20, grown < 48 << 10), (sent, grown)
        # Compared as a count and a truth value: a diff of megabytes would take minutes.
        assert (complete, True) == (
            replies.count(b"\n\n"),
            replies == reply * complete,
        )
        assert 1 == warned


class TestSlots:
    def test_connections_that_never_ask_are_closed_long_before_request_timeout(
        self, tmp_path: Path
    ) -> None:
        port = free_port()
        config = write_config(tmp_path, port)
        config.write_text(
            config.read_text().replace("[daemon]\n", "[daemon]\nfirst_request_timeout = 1\n")
        )
        with Daemon(config):
            silent = connect(("127.0.0.1", port), socket.AF_INET)
            used = connect(("127.0.0.1", port), socket.AF_INET)
            used.sendall(encode_request(request("a@x")))
            assert echo_reply("echo", "a@x") == read_replies(used, 1)
            silent.settimeout(5.0)
            started = time.monotonic()
            closed = silent.recv(1) == b""
            took = time.monotonic() - started
            time.sleep(1.5)
            used.sendall(encode_request(request("b@x")))
            assert echo_reply("echo", "b@x") == read_replies(used, 1)
        assert (True, True) == (closed, took < 2.0), took

    def test_a_unix_peer_whose_user_is_not_allowed_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.sock"
        me = pwd.getpwuid(os.getuid()).pw_name
        with Daemon(unix_config(tmp_path, path, ["nobody"])) as daemon:
            refused = connect(str(path), socket.AF_UNIX)
            refused.settimeout(5.0)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                refused.sendall(encode_request(request("a@x")))
            try:
                answer = refused.recv(100)
            except ConnectionResetError:
                answer = b""
            assert b"" == answer
            daemon.wait_for_log('"event":"connection_refused"')
            assert f'"uid":{os.getuid()}' in daemon.log()
        with Daemon(unix_config(tmp_path, path, [me])):
            allowed = connect(str(path), socket.AF_UNIX)
            allowed.sendall(encode_request(request("a@x")))
            assert echo_reply("echo", "a@x") == read_replies(allowed, 1)


class TestShutdown:
    def test_sigterm_answers_requests_buffered_on_idle_connections(self, tmp_path: Path) -> None:
        port = free_port()
        with Daemon(write_config(tmp_path, port)) as daemon:
            socks = [connect(("127.0.0.1", port), socket.AF_INET) for _ in range(16)]
            time.sleep(0.3)  # every connection accepted and idle
            daemon.signal(signal.SIGTERM)
            for i, sock in enumerate(socks):  # in flight as the daemon starts to stop
                sock.sendall(encode_request(request(f"t{i}@x")))
            replies = [read_replies(sock, 1, 5.0) for sock in socks]
            status = daemon.wait()
        print(sum(r != b"" for r in replies))
        assert [echo_reply("echo", f"t{i}@x") for i in range(16)] == replies
        assert 0 == status

    def test_a_burst_of_connections_is_accepted_without_syn_retries(self, tmp_path: Path) -> None:
        port = free_port()
        with Daemon(write_config(tmp_path, port)) as daemon:
            daemon.signal(signal.SIGSTOP)  # nothing accepts while the burst arrives
            socks = []
            started = time.monotonic()
            for _ in range(300):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)  # noqa: FBT003 - socket's own API
                sock.connect_ex(("127.0.0.1", port))
                socks.append(sock)
            time.sleep(0.2)
            daemon.signal(signal.SIGCONT)
            for sock in socks:
                sock.setblocking(True)  # noqa: FBT003 - socket's own API
                sock.settimeout(10.0)
                sock.sendall(encode_request(request("burst@x")))
            replies = [read_replies(sock, 1, 10.0) for sock in socks]
            took = time.monotonic() - started
        assert [echo_reply("echo", "burst@x")] * 300 == replies
        assert took < 1.0, took


def listening(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, 1.0):
        return True
    return False


class TestLogs:
    def test_a_stalled_log_consumer_does_not_stop_answers(self, tmp_path: Path) -> None:
        port = free_port()
        address = ("127.0.0.1", port)
        config = write_config(tmp_path, port)
        argv = [sys.executable, "-m", "postgate", "run", "-c", str(config)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:  # nobody reads the daemon's output until the end
            wait_until(lambda: listening(address), "the daemon to listen", 20.0)
            # 50,000 decision lines, about 13 MiB: past the pipe and past the bound.
            many = functools.partial(conversation, count=5000)
            answered, wrong = drive(address, socket.AF_INET, 10, many, 4096, 20)
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        notices = [orjson.loads(line) for line in output.splitlines() if b"lines_dropped" in line]
        assert (50_000, [], 0) == (answered, wrong[:3], proc.returncode)
        assert [True] == [notice["lines"] > 0 for notice in notices[:1]], output[-500:]

    def test_a_connection_flood_logs_one_line_and_a_count(self, tmp_path: Path) -> None:
        port = free_port()
        config = write_config(tmp_path, port)
        config.write_text(
            config.read_text().replace("[daemon]\n", '[daemon]\nallow = ["10.0.0.0/8"]\n')
        )
        with Daemon(config) as daemon:  # loopback is refused: every attempt is logged
            for _ in range(300):
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 1.0).close()
            daemon.wait_for_log('"event":"log_suppressed"', timeout=15.0)
            log = daemon.log().splitlines()
        refused = sum('"event":"connection_refused"' in line for line in log)
        counts = [orjson.loads(line)["count"] for line in log if '"log_suppressed"' in line]
        assert (1, [299]) == (refused, counts)
