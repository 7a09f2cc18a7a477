"""A private redis-server on a loopback port, in a temp dir, for the state tests.

Started from Debian's ``redis-server`` package with no config file: no
persistence unless asked, no other client. `stop`, `pause` (SIGSTOP),
`resume` and `start` again drive the outages the tests need; every wait is
bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Final

from postgate.commands.redis_state import RespClient
from postgate.config.redis import RedisSettings
from postgate.state.report import StateError
from tests.integration.support.needs import need
from tests.integration.support.net import free_port

READY_TIMEOUT: Final = 10.0


def redis_server() -> str:
    """The redis-server binary; fails under CI=true, skips elsewhere, when missing."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        need("redis-server is not installed (Debian package redis-server)")
        raise AssertionError  # need() does not return
    return found


class PrivateRedis:
    """One redis-server on 127.0.0.1:port, its files under ``home``."""

    def __init__(self, home: Path, *, password: str | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.password = password
        self.binary = redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.home), "--save", "", "--appendonly", "no"]
        args += ["--protected-mode", "yes", "--logfile", str(self.home / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < stop:
            if self._answers():
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.command("PING") == "PONG")
        except StateError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused server cannot die of SIGTERM
            process.terminate()
            try:
                process.wait(timeout=READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=READY_TIMEOUT)

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def command(self, *words: str) -> Any:
        """One command over a fresh connection (postgate's own RESP client), its reply."""
        settings = RedisSettings(port=self.port, password=self.password, reply_timeout=2.0)
        client = RespClient(settings)
        try:
            return client.call(*words)
        finally:
            client.close()
