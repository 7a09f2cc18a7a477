"""The servers under test: how each is started, found ready, measured and stopped.

Every server listens on 127.0.0.1 or a UNIX socket only, is started fresh for
its run and is always stopped (SIGTERM, then SIGKILL for the whole process
tree) when the run ends or fails, so nothing is left behind. postfwd cannot
serve a socket without daemonising (its --nodaemon mode reads one request
stream from stdin), so it is started with -d and a pid file, and tracked by
that pid; it runs as Debian's dedicated `postfw` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import procstat

if TYPE_CHECKING:
    from collections.abc import Iterator

BENCH: Final = Path(__file__).resolve().parent
REPO: Final = BENCH.parent
READY_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 15.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a server listens: a loopback TCP port or a UNIX socket path."""

    port: int = 0
    path: Path | None = None

    @property
    def loadgen(self) -> str:
        return f"unix:{self.path}" if self.path else f"tcp:127.0.0.1:{self.port}"

    def connectable(self) -> bool:
        family = socket.AF_UNIX if self.path else socket.AF_INET
        address = str(self.path) if self.path else ("127.0.0.1", self.port)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(address)
            except OSError:
                return False
            return True


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = procstat.state(pid)
    return state not in {"Z", "X", None}


@dataclass(slots=True)
class Running:
    """A started server: the root of its process tree and how to talk to it."""

    name: str
    pid: int
    endpoint: Endpoint
    process: subprocess.Popen[bytes] | None = None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not alive(self.pid):
                raise RuntimeError(f"{self.name} exited before it was ready (see its log)")
            if self.endpoint.connectable():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s")

    def stop(self) -> None:
        pids = procstat.tree(self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            if self.process is not None:
                self.process.poll()  # reap our own child so it does not linger as a zombie
            time.sleep(0.05)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT)


class Server(Protocol):
    @property
    def name(self) -> str: ...

    def available(self) -> str | None:
        """None when the server can run here, else why not."""

    def start(self, endpoint: Endpoint, workdir: Path) -> Running: ...


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into an exception, so that every server is stopped on the way out."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


@contextlib.contextmanager
def running(server: Server, endpoint: Endpoint, workdir: Path) -> Iterator[Running]:
    started = server.start(endpoint, workdir)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def _log(workdir: Path, name: str, *, discard: bool = False) -> int:
    if discard:
        return os.open(os.devnull, os.O_WRONLY)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return os.open(logs / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def _spawn(
    name: str, argv: list[str], endpoint: Endpoint, workdir: Path, *, discard: bool = False
) -> Running:
    log = _log(workdir, name, discard=discard)
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        os.close(log)
    return Running(name, process.pid, endpoint, process)


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The C server that answers DUNNO to everything: the protocol's ceiling."""

    binary: Path
    name: str = "ceiling"

    def available(self) -> str | None:
        return None if self.binary.exists() else f"{self.binary} is not built"

    def start(self, endpoint: Endpoint, workdir: Path) -> Running:
        spec = f"unix:{endpoint.path}" if endpoint.path else f"tcp:{endpoint.port}"
        argv = [str(self.binary), "--listen", spec, "--lifetime", "7200"]
        return _spawn(self.name, argv, endpoint, workdir)


@dataclass(frozen=True, slots=True)
class Postfwd:
    """Debian's postfwd (1 or 2) with the reference ruleset in its own language."""

    variant: str  # "postfwd1" or "postfwd2"
    lists: Path
    name: str
    # The reference ruleset has no DNS item; the DNS-list benchmark passes others,
    # and a prefix (a private mount namespace) for the command.
    options: tuple[str, ...] = ("--nodns",)
    prefix: tuple[str, ...] = ()

    @property
    def program(self) -> Path:
        return Path("/usr/sbin") / self.variant

    def available(self) -> str | None:
        return None if self.program.exists() else f"{self.program} is not installed"

    def ruleset(self, workdir: Path) -> Path:
        template = (BENCH / "postfwd.cf").read_text(encoding="utf-8")
        path = workdir / "postfwd.cf"
        path.write_text(template.replace("@LISTS@", str(self.lists.resolve())), "utf-8")
        return path

    def start(self, endpoint: Endpoint, workdir: Path) -> Running:
        rundir = workdir / "run"
        rundir.mkdir(parents=True, exist_ok=True)
        pidfile = rundir / f"{self.name}.pid"
        pidfile.unlink(missing_ok=True)  # left behind by a previous run: postfwd runs unprivileged
        user = "postfw" if _user_exists("postfw") else "nobody"
        group = "postfw" if user == "postfw" else "nogroup"
        where = (
            ["--proto", "unix", "--port", str(endpoint.path)]
            if endpoint.path
            else ["--interface", "127.0.0.1", "--port", str(endpoint.port)]
        )
        argv = [
            *self.prefix,
            str(self.program),
            "--daemon",
            *self.options,
            "-f",
            str(self.ruleset(workdir)),
            *where,
            "--user",
            user,
            "--group",
            group,
            "--pidfile",
            str(pidfile),
        ]
        log = _log(workdir, self.name)
        try:
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
                timeout=READY_TIMEOUT,
            )
        finally:
            os.close(log)
        return Running(self.name, _read_pid(pidfile), endpoint)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _read_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().split()[0])
        time.sleep(0.05)
    raise RuntimeError(f"no pid in {pidfile} after {READY_TIMEOUT:.0f} s")


@dataclass(frozen=True, slots=True)
class Postgate:
    """postgate with a configuration whose lists are the benchmark's lists.

    Its decision log (one line per request) stays on; `discard_log` sends it
    to /dev/null instead of a file for runs of millions of requests.
    """

    config: Path
    name: str = "postgate"
    discard_log: bool = False
    venv: Path = REPO / ".venv"

    @property
    def program(self) -> Path:
        return self.venv / "bin" / "postgate"

    def available(self) -> str | None:
        if not self.program.exists():
            return f"{self.program} is not installed (pip install -e .)"
        return None if self.config.exists() else f"{self.config} does not exist"

    def start(self, endpoint: Endpoint, workdir: Path) -> Running:
        listen = (
            f"unix:{endpoint.path}"
            if endpoint.path
            else (f"tcp:{endpoint.port}:interface=127.0.0.1")
        )
        argv = [str(self.program), "run", "-c", str(self.config), "--listen", listen]
        return _spawn(self.name, argv, endpoint, workdir, discard=self.discard_log)


def ensure_built(source: Path, binary: Path, *, threads: bool = False) -> None:
    """Compile a bench C program with gcc -O2 unless the binary is newer than its source."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("gcc is needed to build the load generator (apt-get install gcc)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    flags = ["-O2", "-Wall", "-Wextra", *(["-pthread"] if threads else [])]
    subprocess.run([compiler, *flags, "-o", str(binary), str(source)], check=True)
