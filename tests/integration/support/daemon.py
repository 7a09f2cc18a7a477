"""Run the real ``postgate`` daemon as a subprocess, and talk to it like Postfix.

Shared by the integration tests: `Daemon` starts ``python -m postgate run``
with a config written into a temporary directory, waits until it answers,
and always stops it. `drive` is a single-threaded, selector-based client that
keeps many persistent connections in lock-step (one request, one reply, like
Postfix's smtpd processes), writing and reading in chunks of a chosen size.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from postgate.wire.codec import encode_request
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

START_TIMEOUT = 20.0


@dataclass
class Daemon:
    """One postgate process; use as a context manager."""

    config: Path
    listen: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    # Each process needs a log of its own, or a restart would find the old
    # process's "started" line; the default sits beside the config.
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.log_path is None:
            self.log_path = self.config.with_suffix(".log")

    @property
    def _log(self) -> Path:
        assert self.log_path is not None
        return self.log_path

    def start(self) -> Self:
        args = [sys.executable, "-m", "postgate", "run", "-c", str(self.config)]
        for endpoint in self.listen:
            args += ["--listen", endpoint]
        env = dict(os.environ if self.env is None else self.env)
        env.pop("NOTIFY_SOCKET", None)
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self.wait_for_log('"event":"started"')
        except BaseException:
            self.stop()  # never leave a daemon behind a failed start
            raise
        return self

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        def logged() -> bool:
            if self.log().count(needle) >= count:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"postgate exited {self.proc.returncode}:\n{self.log()}")
            return False

        wait_until(logged, lambda: f"{needle!r} in the log:\n{self.log()}", timeout)

    def log(self) -> str:
        try:
            return self._log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        """The exit status of a daemon already told to stop; no second signal.

        A second SIGTERM could land while the interpreter finalises, when
        the default action applies, and turn a clean exit into -15.
        """
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return int(self.proc.returncode)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def connect(address: tuple[str, int] | str, family: int) -> socket.socket:
    """Connect like Postfix does: a full listen queue is retried, not fatal."""
    for _ in range(100):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(address)
            break
        except BlockingIOError:  # UNIX listen backlog full: try again shortly
            sock.close()
            time.sleep(0.01)
    else:
        raise ConnectionError(f"{address}: listen queue stayed full")
    if family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def ask(sock: socket.socket, attrs: Mapping[str, str]) -> bytes:
    """Send one request and read exactly one reply (blocking)."""
    sock.sendall(encode_request(attrs))
    reply = b""
    while not reply.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {reply!r}")
        reply += chunk
    return reply


@dataclass
class _Conn:
    sock: socket.socket
    todo: Iterator[tuple[bytes, bytes]]
    out: bytes = b""
    expect: bytes = b""
    got: bytes = b""
    done: int = 0
    wrong: list[tuple[bytes, bytes]] = field(default_factory=list)


def drive(
    address: tuple[str, int] | str,
    family: int,
    connections: int,
    requests: Callable[[int], Iterator[tuple[bytes, bytes]]],
    chunk: int,
    timeout: float = 120.0,
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Run lock-step conversations on many connections at once.

    ``requests(i)`` yields ``(request_bytes, expected_reply)`` pairs for
    connection ``i``. Returns the number of replies received and every
    ``(expected, got)`` mismatch. Bounded by ``timeout``.
    """
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(connections):
        sock = connect(address, family)
        sock.setblocking(False)  # noqa: FBT003 - socket's own API
        conn = _Conn(sock, requests(i))
        conns.append(conn)
        _next(conn)
        sel.register(sock, selectors.EVENT_WRITE, conn)
    deadline = time.monotonic() + timeout
    open_conns = len(conns)
    while open_conns and time.monotonic() < deadline:
        for key, events in sel.select(timeout=1.0):
            conn = key.data
            if events & selectors.EVENT_WRITE and conn.out:
                _write(conn, chunk)
                if not conn.out:
                    sel.modify(conn.sock, selectors.EVENT_READ, conn)
            elif events & selectors.EVENT_READ and _read(conn, chunk):
                if _next(conn):
                    sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
                else:
                    sel.unregister(conn.sock)
                    open_conns -= 1
    for conn in conns:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn.sock)
        conn.sock.close()
    sel.close()
    wrong = [w for c in conns for w in c.wrong]
    if open_conns:
        wrong.append((b"all replies", f"{open_conns} connections unfinished".encode()))
    return sum(c.done for c in conns), wrong


def _next(conn: _Conn) -> bool:
    try:
        conn.out, conn.expect = next(conn.todo)
    except StopIteration:
        return False
    conn.got = b""
    return True


def _write(conn: _Conn, chunk: int) -> None:
    sent = conn.sock.send(conn.out[:chunk])
    conn.out = conn.out[sent:]


def _read(conn: _Conn, chunk: int) -> bool:
    data = conn.sock.recv(chunk)
    if not data:
        conn.wrong.append((conn.expect, b"<connection closed>"))
        conn.todo = iter(())
        return True
    conn.got += data
    if not conn.got.endswith(b"\n\n"):
        return False
    if conn.got != conn.expect:
        conn.wrong.append((conn.expect, conn.got))
    conn.done += 1
    return True
