"""A private Postfix for one test session: start, stop, log, queue and mailboxes.

Everything lives under one temporary root: configuration, queue, data, mail
log and mailboxes; the system's ``/etc/postfix`` is never read for main.cf or
master.cf and never written. The root is world-traversable because Postfix's
daemons drop to the ``postfix`` user and deliver as ``nobody``. What the
instance contains is in `tests.integration.support.postfix_config`.

Postfix notices a policy server that went away between SMTP sessions (its
idle connection gets EOF) and reconnects without a warning, so tests may start
and stop policy servers on the slots freely.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tests.integration.support.net import free_port
from tests.integration.support.postfix_config import (
    SERVICES,
    Layout,
    main_cf,
    make_certificates,
    master_cf,
    service_params,
)
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from email.message import EmailMessage

SBIN: Final = Path("/usr/sbin")


def missing_reason() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not (SBIN / "postfix").exists():
        return "Postfix is not installed (/usr/sbin/postfix); `make system-deps` installs it"
    if os.geteuid() != 0:
        return "a private Postfix needs root: master(8) starts as root and drops privileges"
    return None


def postfix_version() -> str:
    out = subprocess.run(
        [SBIN / "postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@dataclass
class MailLog:
    """Postfix's maillog_file (written by postlogd), read in windows."""

    path: Path
    config: Path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def lines_from(self, offset: int) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()

    def barrier(self) -> None:
        """Wait until everything Postfix logged before now is in the file.

        All Postfix processes log through one postlogd datagram socket, so a
        marker logged now arrives after every earlier line.
        """
        marker = f"barrier {uuid.uuid4().hex}"
        start = self.size()
        subprocess.run(
            [SBIN / "postlog", "-c", str(self.config), "-t", "postgate-test", marker], check=True
        )
        wait_until(lambda: marker in "\n".join(self.lines_from(start)), f"log marker {marker}")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """The maildirs the virtual(8) agent delivers into, one file per recipient."""

    base: Path

    def messages(self, token: str, folder: str = "all") -> list[EmailMessage]:
        new = self.base / folder / "new"
        if not new.is_dir():
            return []
        needle = token.encode()
        found = []
        for path in sorted(new.iterdir()):
            raw = path.read_bytes()
            if needle in raw:
                found.append(_parse(raw))
        return found

    def wait(self, token: str, count: int, folder: str = "all") -> list[EmailMessage]:
        """Wait until ``count`` copies carrying ``token`` were delivered, and return them."""
        wait_until(
            lambda: len(self.messages(token, folder)) >= count,
            f"{count} deliveries of {token} into {folder}",
        )
        return self.messages(token, folder)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)  # what policy.default builds
    return parsed


@dataclass
class LogWindow:
    """The mail log lines written while one test ran."""

    postfix: PrivatePostfix
    start: int = 0
    allowed: list[str] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Declare a warning this test provokes on purpose (regular expression)."""
        self.allowed.append(pattern)

    def lines(self) -> list[str]:
        self.postfix.log.barrier()
        return self.postfix.log.lines_from(self.start)

    def unexpected_warnings(self) -> list[str]:
        warnings = (line for line in self.lines() if re.search(r"\bwarning: ", line))
        return [w for w in warnings if not any(re.search(p, w) for p in self.allowed)]


@contextlib.contextmanager
def log_checked(postfix: PrivatePostfix) -> Iterator[LogWindow]:
    """A log window that must hold no unexpected warning when the block ends.

    Module fixtures that drive Postfix use it directly: they run before any
    test's own window opens.
    """
    window = LogWindow(postfix, postfix.log.size())
    yield window
    unexpected = window.unexpected_warnings()
    assert not unexpected, f"Postfix logged warnings: {unexpected}"


class PrivatePostfix:
    """One Postfix instance under a temporary root, controlled with ``postfix -c``."""

    def __init__(self, local_domains: Sequence[str]) -> None:
        root = Path(tempfile.mkdtemp(prefix="postgate-postfix-"))
        root.chmod(0o755)
        self.layout = Layout(root)
        self.local_domains = tuple(dict.fromkeys(local_domains))
        self.policy_port = free_port()
        self.ports = {svc.name: free_port() for svc in SERVICES}
        self.log = MailLog(self.layout.log, self.layout.config)
        self.mailbox = Mailbox(self.layout.mail)
        self.client_fingerprint = ""
        self._pids: set[int] = set()

    @property
    def policy_socket(self) -> Path:
        return self.layout.policy_socket

    def write_files(self) -> None:
        lay = self.layout
        for d in (lay.config, lay.queue, lay.data, lay.mail, lay.policy_socket.parent):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(lay.data, "postfix")
        shutil.chown(lay.mail, "nobody")
        self.client_fingerprint = make_certificates(lay.tls)
        params = main_cf(lay, self.policy_port, self.local_domains)
        params += "".join(
            f"{k} = {v}\n" for svc in SERVICES for k, v in service_params(svc).items()
        )
        (lay.config / "main.cf").write_text(params)
        (lay.config / "master.cf").write_text(master_cf(self.ports))

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SBIN / "postfix", "-c", str(self.layout.config), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def start(self) -> None:
        self.write_files()
        done = self.command("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed: {done.stderr}{done.stdout}")
        for port in self.ports.values():
            wait_until(functools.partial(_accepts, port), f"smtpd on 127.0.0.1:{port}")
        self._pids = self.processes()

    def master_pid(self) -> int | None:
        try:
            return int((self.layout.queue / "pid" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def processes(self) -> set[int]:
        """master(8) and every process it started (smtpd, qmgr, postlogd, ...)."""
        master = self.master_pid()
        return set() if master is None else _descendants(master)

    def stop(self) -> list[str]:
        """Stop the instance; return a description of any process that had to be killed."""
        pids = self._pids | self.processes()
        self.command("stop")
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not _alive(pids), "Postfix processes to exit", timeout=10)
        leftovers = [f"{pid} {_cmdline(pid)}" for pid in sorted(_alive(pids))]
        for pid in _alive(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers

    def remove(self) -> None:
        shutil.rmtree(self.layout.root, ignore_errors=True)

    def queue(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            [SBIN / "postqueue", "-c", str(self.layout.config), "-j"],
            capture_output=True,
            text=True,
            check=True,
        )
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def queued(self, queue_id: str) -> dict[str, Any] | None:
        return next((m for m in self.queue() if m["queue_id"] == queue_id), None)

    def delete(self, queue_id: str) -> None:
        subprocess.run(
            [SBIN / "postsuper", "-c", str(self.layout.config), "-d", queue_id],
            capture_output=True,
            check=True,
        )


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found = {root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found if root in parents else set()


def _alive(pids: Iterable[int]) -> set[int]:
    alive = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state != "Z":
                alive.add(pid)
    return alive


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return "?"
