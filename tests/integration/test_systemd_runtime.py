"""The real daemon under a stand-in for systemd: notify socket, passed sockets, journal.

Each test starts ``python -m postgate run`` through a tiny wrapper that does
what systemd does between fork and exec: move the listening sockets to fd 3
and up, set ``LISTEN_PID``/``WATCHDOG_PID`` to the pid that will run postgate,
optionally forbid writable+executable memory (``PR_SET_MDWE``, the kernel's
form of ``MemoryDenyWriteExecute=``), then exec. The test binds the notify
socket itself and reads the datagrams in order. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import pytest
import pytest_twisted
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from postgate.daemon.systemd import InheritedUnixEndpoint
from postgate.wire.policy_files import read_policy_file
from tests.integration.support.daemon import ask, connect
from tests.integration.support.needs import need
from tests.integration.support.units import SERVICE, UNIT_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from twisted.internet.interfaces import IReactorSocket

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

# What systemd does between fork() and exec(), for the one process we start.
WRAPPER = """\
import fcntl, os, sys
src = [int(fd) for fd in os.environ.pop("PG_TEST_FDS", "").split(",") if fd]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in src]
for fd in src:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
if src:
    os.environ["LISTEN_FDS"] = str(len(src))
    os.environ["LISTEN_PID"] = str(os.getpid())
if os.environ.pop("PG_TEST_WATCHDOG_PID", ""):
    os.environ["WATCHDOG_PID"] = str(os.getpid())
if os.environ.pop("PG_TEST_MDWE", ""):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(97)
os.execv(sys.executable, [sys.executable, "-m", "postgate", *sys.argv[1:]])
"""
NO_MDWE = 97
UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid

CONFIG = """\
[daemon]
listen = [{listen}]
log_level = "info"
shutdown_timeout = 2.0

[[rules]]
id = "SYSTEMD"
action = "550 5.7.1 {word}"
"""

# Whatever systemd may have set for the test runner itself must not leak in.
SYSTEMD_VARIABLES = frozenset(
    {
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "JOURNAL_STREAM",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    }
)

TCP_NAME = "postgate-tcp"
UNIX_NAME = "postgate-unix"
INHERITED = f'"systemd:domain=INET:name={TCP_NAME}", "systemd:domain=UNIX:name={UNIX_NAME}"'

REQUEST = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "client_address": "192.0.2.7",
    "sender": "s@example.org",
    "recipient": "r@example.com",
}


def reply(word: str) -> bytes:
    return f"action=550 5.7.1 {word}\n\n".encode()


def write_config(tmp_path: Path, listen: str, word: str = "hello") -> Path:
    path = tmp_path / "postgate.toml"
    path.write_text(CONFIG.format(listen=listen, word=word))
    return path


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@dataclass
class Message:
    """One datagram as systemd would receive it, with the time it arrived."""

    fields: dict[str, str]
    at: float
    pid: int

    @property
    def head(self) -> str:
        """The state line (``READY=1``, ``WATCHDOG=1``...) that opens the datagram."""
        key = next(iter(self.fields))
        return f"{key}={self.fields[key]}"


def parse(datagram: bytes) -> dict[str, str]:
    lines = datagram.decode().split("\n")
    return dict(line.split("=", 1) for line in lines if line)


@dataclass
class Manager:
    """systemd's end of ``$NOTIFY_SOCKET``: a datagram socket the test binds."""

    path: Path
    sock: socket.socket = field(init=False)
    seen: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        # As systemd does: the kernel stamps each datagram with the sender's pid.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)

    def receive(self) -> Message | None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        except TimeoutError:
            return None
        pids = [
            UCRED.unpack(payload[: UCRED.size])[0]
            for level, kind, payload in ancillary
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        ]
        message = Message(parse(data), time.monotonic(), pids[0] if pids else 0)
        self.seen.append(message)
        return message

    def close(self) -> None:
        self.sock.close()


@dataclass
class Run:
    """One postgate process started the way systemd would start it."""

    config: Path
    manager: Manager
    proc: subprocess.Popen[bytes]
    log_path: Path

    def wait_for(self, head: str, timeout: float = START_TIMEOUT) -> Message:
        """Read datagrams until one opens with ``head``; fail if postgate dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.manager.receive()
            if message is not None and message.head == head:
                return message
            if message is None and self.proc.poll() is not None:
                break
        raise AssertionError(f"no {head} (exit {self.proc.poll()}): {self.heads()}\n{self.log()}")

    def collect(self, head: str, count: int, timeout: float) -> list[Message]:
        """The first ``count`` messages opening with ``head``, or all seen by ``timeout``."""
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            message = self.manager.receive()
            if message is not None and message.head == head:
                found.append(message)
        return found

    def heads(self) -> list[str]:
        return [m.head for m in self.manager.seen]

    def states(self) -> list[str]:
        """The state changes seen so far, without STATUS= updates and watchdog pings."""
        return [h for h in self.heads() if not h.startswith(("STATUS=", "WATCHDOG="))]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def main_pid(self) -> int:
        """The pid the notifications came from: systemd's MAINPID for Type=notify."""
        pids = {m.pid for m in self.manager.seen}
        assert len(pids) == 1, pids
        return pids.pop()

    def signal(self, signum: int) -> None:
        """Signal postgate itself, as ``kill -HUP $MAINPID`` does (strace may sit between)."""
        os.kill(self.main_pid(), signum)

    def wait(self) -> int:
        """Wait for the exit, then take in every datagram it left behind."""
        status = self.proc.wait(STOP_TIMEOUT)
        while self.manager.receive() is not None:
            pass
        return status

    def kill(self) -> None:
        """Leave nothing running: postgate itself too when strace sits between."""
        for pid in {m.pid for m in self.manager.seen} - {self.proc.pid, 0}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


@dataclass
class Launcher:
    """Starts postgate runs for one test and always reaps them."""

    tmp_path: Path
    runs: list[Run] = field(default_factory=list)

    def start(
        self,
        config: Path,
        *,
        sockets: tuple[tuple[socket.socket, str], ...] = (),
        env: dict[str, str] | None = None,
        wrap: tuple[str, ...] = (),
        journal: bool = False,
    ) -> Run:
        n = len(self.runs)
        manager = Manager(self.tmp_path / f"notify{n}")
        fds = tuple(s.fileno() for s, _ in sockets)
        child_env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}
        child_env.update(env or {})
        child_env["NOTIFY_SOCKET"] = str(manager.path)
        if sockets:
            child_env["PG_TEST_FDS"] = ",".join(map(str, fds))
            child_env["LISTEN_FDNAMES"] = ":".join(name for _, name in sockets)
        log_path = self.tmp_path / f"postgate{n}.log"
        log_path.touch()
        if journal:
            # What systemd sets when stdout is connected to journald.
            stat = log_path.stat()
            child_env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        args = [*wrap, sys.executable, "-c", WRAPPER, "run", "-c", str(config)]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=child_env, pass_fds=fds
            )
        run = Run(config, manager, proc, log_path)
        self.runs.append(run)
        return run

    def close(self) -> None:
        for run in self.runs:
            run.kill()
            run.manager.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    started = Launcher(tmp_path)
    yield started
    started.close()


def listening_tcp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def listening_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


@pytest.fixture
def inherited(tmp_path: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP and a UNIX listening socket, as postgate.socket and postgate-unix.socket make."""
    tcp, unix = listening_tcp(), listening_unix(tmp_path / "policy.sock")
    yield tcp, unix
    tcp.close()
    unix.close()


def named(pair: tuple[socket.socket, socket.socket]) -> tuple[tuple[socket.socket, str], ...]:
    return ((pair[0], TCP_NAME), (pair[1], UNIX_NAME))


def ask_tcp(sock: socket.socket) -> bytes:
    with connect(sock.getsockname(), socket.AF_INET) as client:
        return ask(client, REQUEST)


def ask_unix(sock: socket.socket) -> bytes:
    with connect(sock.getsockname(), socket.AF_UNIX) as client:
        return ask(client, REQUEST)


def tcp_config(tmp_path: Path, word: str = "hello") -> Path:
    return write_config(tmp_path, f'"systemd:domain=INET:name={TCP_NAME}"', word)


class TestReadiness:
    def test_ready_comes_first_and_only_once_listening(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """READY=1 comes first, from the main pid, and a request right after it is answered."""
        run = launcher.start(write_config(tmp_path, INHERITED), sockets=named(inherited))
        ready = run.wait_for("READY=1")
        answers = (ask_tcp(inherited[0]), ask_unix(inherited[1]))
        expected = (["READY=1"], (reply("hello"), reply("hello")), run.proc.pid)
        assert expected == (run.states(), answers, run.main_pid())
        assert "rules" in ready.fields["STATUS"]

    def test_lifecycle_order(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """Start, SIGHUP and SIGTERM give READY, RELOADING, READY, STOPPING, then exit 0."""
        run = launcher.start(tcp_config(tmp_path), sockets=named(inherited)[:1])
        run.wait_for("READY=1")
        run.signal(signal.SIGHUP)
        run.wait_for("READY=1")
        run.signal(signal.SIGTERM)
        run.wait_for("STOPPING=1")
        status = run.wait()
        expected = (["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], 0)
        assert expected == (run.states(), status)


class TestReload:
    def test_reloading_carries_the_monotonic_clock(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """MONOTONIC_USEC is CLOCK_MONOTONIC taken between our SIGHUP and the new READY."""
        run = launcher.start(tcp_config(tmp_path), sockets=named(inherited)[:1])
        run.wait_for("READY=1")
        before = monotonic_usec()
        run.signal(signal.SIGHUP)
        reloading = run.wait_for("RELOADING=1")
        run.wait_for("READY=1")
        after = monotonic_usec()
        stamp = int(reloading.fields["MONOTONIC_USEC"])
        expected = (True, True)
        assert expected == (before <= stamp, stamp <= after)

    def test_new_rules_answer_after_reload(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """After the second READY=1 the adopted socket answers with the edited rules."""
        config = tcp_config(tmp_path, "before")
        run = launcher.start(config, sockets=named(inherited)[:1])
        run.wait_for("READY=1")
        first = ask_tcp(inherited[0])
        tcp_config(tmp_path, "after")
        run.signal(signal.SIGHUP)
        run.wait_for("RELOADING=1")
        run.wait_for("READY=1")
        expected = (reply("before"), reply("after"))
        assert expected == (first, ask_tcp(inherited[0]))

    def test_failed_reload_still_ends_with_ready(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """A broken file must not leave systemd waiting in 'reloading': READY=1 follows."""
        config = tcp_config(tmp_path, "kept")
        run = launcher.start(config, sockets=named(inherited)[:1])
        run.wait_for("READY=1")
        config.write_text("[daemon\nbroken")
        run.signal(signal.SIGHUP)
        run.wait_for("RELOADING=1")
        run.wait_for("READY=1")
        expected = (reply("kept"), True)
        assert expected == (ask_tcp(inherited[0]), '"config_reload_failed"' in run.log())


class TestWatchdog:
    def test_pings_at_half_the_watchdog_interval(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """WATCHDOG_USEC=1s gives a WATCHDOG=1 every 0.5 s on average over eight pings."""
        env = {"WATCHDOG_USEC": "1000000", "PG_TEST_WATCHDOG_PID": "1"}
        config = tcp_config(tmp_path)
        run = launcher.start(config, sockets=named(inherited)[:1], env=env)
        run.wait_for("READY=1")
        pings = run.collect("WATCHDOG=1", count=8, timeout=START_TIMEOUT)
        assert len(pings) == 8, run.heads()
        mean = (pings[-1].at - pings[0].at) / (len(pings) - 1)
        expected = (True, True)
        assert expected == (mean >= 0.35, mean <= 0.75), mean

    def test_watchdog_for_another_pid_is_ignored(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """WATCHDOG_PID naming another process means no pings at all (sd_watchdog_enabled)."""
        env = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
        run = launcher.start(tcp_config(tmp_path), sockets=named(inherited)[:1], env=env)
        run.wait_for("READY=1")
        # Armed, ten pings would arrive in this second; collect() returns early if any does.
        pings = run.collect("WATCHDOG=1", count=1, timeout=1.0)
        assert pings == []


class TestSocketActivation:
    def test_answers_on_inherited_tcp_and_unix(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """Both named descriptors are adopted: each answers a policy request."""
        run = launcher.start(write_config(tmp_path, INHERITED), sockets=named(inherited))
        run.wait_for("READY=1")
        expected = (reply("hello"), reply("hello"))
        assert expected == (ask_tcp(inherited[0]), ask_unix(inherited[1]))

    def test_names_not_order_pick_the_socket(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """Passed as fd 3 = UNIX and fd 4 = TCP, the names still route each endpoint right."""
        swapped = ((inherited[1], UNIX_NAME), (inherited[0], TCP_NAME))
        run = launcher.start(write_config(tmp_path, INHERITED), sockets=swapped)
        run.wait_for("READY=1")
        expected = (reply("hello"), reply("hello"))
        assert expected == (ask_tcp(inherited[0]), ask_unix(inherited[1]))

    def test_missing_socket_fails_start_without_ready(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """A socket unit that did not start makes postgate fail loudly, never half-ready."""
        run = launcher.start(write_config(tmp_path, INHERITED), sockets=named(inherited)[:1])
        status = run.wait()
        expected: tuple[bool, list[str], bool] = (True, [], True)
        assert expected == (status != 0, run.states(), "postgate-unix" in run.log())

    @pytest.mark.parametrize("transport", ["tcp", "unix"])
    def test_connection_waiting_in_backlog_is_answered_by_next_start(
        self,
        launcher: Launcher,
        tmp_path: Path,
        inherited: tuple[socket.socket, socket.socket],
        transport: str,
    ) -> None:
        """Between a stop and the next start, Postfix's connection queues instead of failing."""
        config = write_config(tmp_path, INHERITED)
        first = launcher.start(config, sockets=named(inherited))
        first.wait_for("READY=1")
        first.signal(signal.SIGTERM)
        first.wait()
        listener = inherited[0] if transport == "tcp" else inherited[1]
        with connect(listener.getsockname(), listener.family) as waiting:
            second = launcher.start(config, sockets=named(inherited))
            second.wait_for("READY=1")
            assert reply("hello") == ask(waiting, REQUEST)

    def test_unix_socket_file_keeps_the_mode_systemd_gave_it(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """SocketMode=0660 survives a run, and the file outlives it (systemd.socket(5))."""
        path = tmp_path / "policy.sock"
        path.chmod(0o660)
        run = launcher.start(write_config(tmp_path, INHERITED), sockets=named(inherited))
        run.wait_for("READY=1")
        running = stat.S_IMODE(path.stat().st_mode)
        run.signal(signal.SIGTERM)
        run.wait()
        after = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
        expected = (0o660, 0o660)
        assert expected == (running, after)


class Greeter(Protocol):
    """Says hi and hangs up: enough to prove a connection was accepted."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hi")
        self.transport.loseConnection()


def read_all(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        return client.recv(100)


class TestInheritedUnixEndpoint:
    @pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
    async def test_stop_leaves_systemds_socket_as_it_was(self, tmp_path: Path) -> None:
        """After the port stops, the path, its mode and systemd's listening copy still work."""
        from twisted.internet import reactor  # noqa: PLC0415 - the one pytest-twisted runs

        path = tmp_path / "p.sock"
        systemd_copy = listening_unix(path)
        path.chmod(0o660)
        endpoint = InheritedUnixEndpoint(
            cast("IReactorSocket", reactor), os.dup(systemd_copy.fileno())
        )
        port = await endpoint.listen(Factory.forProtocol(Greeter))
        greeting = await deferToThread(read_all, path)
        mode_while_listening = stat.S_IMODE(path.stat().st_mode)
        await maybeDeferred(port.stopListening)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late:
            late.connect(str(path))  # refused if shutdown(2) hit systemd's copy
        systemd_copy.close()
        expected = (b"hi", 0o660, 0o660)
        assert expected == (greeting, mode_while_listening, stat.S_IMODE(path.stat().st_mode))


class TestJournal:
    def test_journal_stream_gets_level_prefixes(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """With JOURNAL_STREAM naming our stdout, info lines start <6> and errors <3>."""
        config = tcp_config(tmp_path)
        run = launcher.start(config, sockets=named(inherited)[:1], journal=True)
        run.wait_for("READY=1")
        config.write_text("[daemon\nbroken")
        run.signal(signal.SIGHUP)
        run.wait_for("READY=1")
        run.signal(signal.SIGTERM)
        run.wait()
        prefixes = {event: prefix for prefix, event in events(run.log())}
        expected = ("<6>", "<3>", True)
        got = (prefixes.get("started"), prefixes.get("config_reload_failed"))
        assert expected == (*got, all(p for p, _ in events(run.log())))

    def test_no_prefix_when_stdout_is_not_the_journal(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """A JOURNAL_STREAM inherited by a redirected process must not add prefixes."""
        env = {"JOURNAL_STREAM": "1:1"}
        run = launcher.start(tcp_config(tmp_path), sockets=named(inherited)[:1], env=env)
        run.wait_for("READY=1")
        run.signal(signal.SIGTERM)
        run.wait()
        expected = {""}
        assert expected == {prefix for prefix, _ in events(run.log())}


def events(log: str) -> list[tuple[str, str]]:
    """(syslog prefix or "", event name) for every JSON log line."""
    found = []
    for line in log.splitlines():
        match = re.match(r'^(<\d>)?\{.*?"event":"([a-z_]+)"', line)
        if match:
            found.append((match[1] or "", match[2]))
    return found


class TestHardening:
    def test_runs_with_memory_deny_write_execute(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """Under PR_SET_MDWE (what MemoryDenyWriteExecute=yes enforces) postgate works fully."""
        env = {"PG_TEST_MDWE": "1"}
        run = launcher.start(write_config(tmp_path, INHERITED), sockets=named(inherited), env=env)
        try:
            run.wait_for("READY=1")
        except AssertionError:
            if run.proc.poll() == NO_MDWE:
                need("this kernel has no PR_SET_MDWE (Linux 6.3+)")
            raise
        answers = (ask_tcp(inherited[0]), ask_unix(inherited[1]))
        run.signal(signal.SIGHUP)
        run.wait_for("READY=1")
        run.signal(signal.SIGTERM)
        expected = ((reply("hello"), reply("hello")), 0)
        assert expected == (answers, run.wait())

    def test_system_calls_stay_inside_the_unit_filter(
        self, launcher: Launcher, tmp_path: Path, inherited: tuple[socket.socket, socket.socket]
    ) -> None:
        """Every syscall of a full run, recording included, is allowed by SystemCallFilter=."""
        strace = shutil.which("strace")
        if strace is None:
            need("strace is not installed (apt-get install strace)")
        allowed = unit_syscall_filter()
        trace = tmp_path / "strace.txt"
        wrap = (str(strace), "-f", "-qq", "-o", str(trace))
        config = write_config(tmp_path, INHERITED)
        recording = tmp_path / "rec" / "requests.policy"  # its writer process is traced too
        with config.open("a") as f:
            f.write(f'\n[record]\npath = "{recording}"\nenabled = true\n')
        run = launcher.start(config, sockets=named(inherited), wrap=wrap)
        run.wait_for("READY=1", timeout=60.0)
        answers = (ask_tcp(inherited[0]), ask_unix(inherited[1]))
        run.signal(signal.SIGHUP)
        run.wait_for("READY=1", timeout=60.0)
        run.signal(signal.SIGTERM)
        status = run.wait()
        used = traced_syscalls(trace.read_text(), exec_line=True)
        recorded = len(read_policy_file(recording))
        expected: tuple[tuple[bytes, ...], int, set[str], int] = (
            (reply("hello"),) * 2,
            0,
            set(),
            2,
        )
        assert expected == (answers, status, used - allowed, recorded)


def traced_syscalls(text: str, *, exec_line: bool) -> set[str]:
    """Syscall names strace saw after the wrapper exec'd into postgate."""
    names: set[str] = set()
    started = not exec_line
    for line in text.splitlines():
        match = re.match(r"^\d+\s+([a-z_0-9]+)\(", line)
        if match is None:
            continue
        if not started:
            started = match[1] == "execve" and '"-m", "postgate"' in line
            continue
        names.add(match[1])
    return names


def unit_syscall_filter() -> set[str]:
    """What the unit's SystemCallFilter= lines allow, as systemd-analyze expands them.

    The first line is an allow list; later lines remove (``~``) or add
    names and groups, in order.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        need("systemd-analyze is not installed")
        raise AssertionError  # unreachable: need() raised
    allowed: set[str] = set()
    for line in (UNIT_DIR / SERVICE).read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.removeprefix("SystemCallFilter=")
        names = set().union(
            *(
                expand(analyze, item) if item.startswith("@") else {item}
                for item in value.removeprefix("~").split()
            )
        )
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


def expand(analyze: str, group: str) -> set[str]:
    out = subprocess.run(
        [analyze, "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for raw in out.splitlines()[1:]:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        names |= expand(analyze, line) if line.startswith("@") else {line}
    return names
