"""Recording under attack and failure: a stalled writer, large requests, bad paths."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from postgate.commands.replay import EX_CONFIG
from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port

CONFIG = """\
[daemon]
listen = ["tcp:{port}:interface=127.0.0.1"]
log_level = "info"

[record]
path = "{recording}"
enabled = true

[[rules]]
id = "ECHO"
action = "550 5.7.1 no {{recipient}}"
"""
FILLER = "x" * 15_000  # four of these make a request of about 60 KB, under max_request_bytes


def request(n: int, filler: str = "") -> dict[str, str]:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.7",
        "recipient": f"r{n}@example.com",
    }
    if filler:
        attrs |= {"helo_name": filler, "ccert_subject": filler, "ccert_issuer": filler}
        attrs["ccert_fingerprint"] = filler
    return attrs


def writer_pid(daemon: Daemon) -> int:
    """The daemon's one child: the recording's writer process."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    for _ in range(500):  # bounded: the writer starts with the first record
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("no writer process")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class TestStalledWriter:
    def test_a_backlog_of_large_requests_is_bounded_and_never_stalls_answers(
        self, tmp_path: Path
    ) -> None:
        """Writer stopped while 10,000 requests of 60 KB are answered, then resumed:
        the daemon grows by the byte bound at most, and answers stay prompt as
        the backlog drains."""
        port = free_port()
        config = tmp_path / "postgate.toml"
        recording = tmp_path / "r.policy"
        config.write_text(CONFIG.format(port=port, recording=recording))
        with Daemon(config) as daemon:
            assert daemon.proc is not None
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            ask(sock, request(0))
            writer = writer_pid(daemon)
            before = rss_mib(daemon.proc.pid)
            writer_stopped = True
            os.kill(writer, signal.SIGSTOP)
            try:
                for n in range(1, 10_001):
                    ask(sock, request(n, FILLER))
                grown = rss_mib(daemon.proc.pid) - before
            finally:
                os.kill(writer, signal.SIGCONT)
                writer_stopped = False
            latencies = []
            deadline = time.monotonic() + 20
            for n in range(10_001, 10_201):
                start = time.monotonic()
                ask(sock, request(n))
                latencies.append(time.monotonic() - start)
                if time.monotonic() > deadline:
                    break
            sock.close()
            status = daemon.stop()
        slowest = max(latencies)
        assert (0, False, 200, True, True) == (
            status,
            writer_stopped,
            len(latencies),
            slowest < 0.5,
            grown < 96,
        ), f"slowest answer {slowest:.2f} s, the daemon grew by {grown:.0f} MiB"


class TestPaths:
    def test_check_refuses_a_path_holding_nul(self, tmp_path: Path) -> None:
        """record.path with a NUL is a load error (FILE: place: reason), not a dying writer."""
        config = tmp_path / "postgate.toml"
        config.write_text(CONFIG.format(port=free_port(), recording="r\\u0000.policy"))
        done = subprocess.run(
            [sys.executable, "-m", "postgate", "check", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        said = f"{config}:" in done.stderr and "record.path: must not contain" in done.stderr
        assert (EX_CONFIG, True) == (done.returncode, said), done.stdout + done.stderr
