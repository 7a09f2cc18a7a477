"""A private postgrey (Debian's package) on a loopback port, with its database in a temp dir.

postgrey drops to its own ``postgrey`` user, so the database directory is
given to that user. It reads the request attribute ``policy_test_time`` as
its clock, which lets a test play days of traffic in seconds. Stopped by its
own process id, never by name.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from tests.integration.support.daemon import ask, connect
from tests.integration.support.net import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

POSTGREY: Final = Path("/usr/sbin/postgrey")


def missing_reason() -> str | None:
    if not POSTGREY.exists():
        return "postgrey is not installed (/usr/sbin/postgrey); `make system-deps` installs it"
    try:
        pwd.getpwnam("postgrey")
    except KeyError:
        return "the postgrey user is missing (Debian's postgrey package creates it)"
    if os.geteuid() != 0:
        return "postgrey starts as root and drops to its own user"
    return None


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class PrivatePostgrey:
    """``postgrey --inet=127.0.0.1:PORT`` with its own dbdir and the default whitelists."""

    def __init__(self, directory: Path, delay: int = 300) -> None:
        self.directory = directory
        self.port = free_port()
        self.delay = delay
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.db: Path | None = None

    def __enter__(self) -> Self:
        # A directory of its own under /tmp: pytest's are root-only (0700),
        # and postgrey runs as its own user.
        db = self.db = Path(tempfile.mkdtemp(prefix="postgate-postgrey-"))
        shutil.chown(db, "postgrey", "postgrey")
        args = [
            str(POSTGREY),
            f"--inet=127.0.0.1:{self.port}",
            f"--dbdir={db}",
            f"--delay={self.delay}",
            f"--pidfile={db}/postgrey.pid",
        ]
        with (self.directory / "postgrey.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(functools.partial(_accepts, self.port), "postgrey to listen")
        self.sock = connect(("127.0.0.1", self.port), socket.AF_INET)
        return self

    def ask(self, attrs: Mapping[str, str], now: float) -> str:
        """The action postgrey answers for ``attrs`` at ``now`` (its policy_test_time)."""
        assert self.sock is not None
        reply = ask(self.sock, {**attrs, "policy_test_time": str(int(now))})
        return reply.decode().removeprefix("action=").strip()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        if self.db is not None:
            shutil.rmtree(self.db, ignore_errors=True)


__all__ = ["PrivatePostgrey", "missing_reason"]
