"""Configurations and request files an attacker writes: refused with a place, never a traceback."""

from __future__ import annotations

import os
import queue
import threading
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs
from twisted.internet.testing import MemoryReactorClock

from postgate.config.load import load_config
from postgate.config.problems import ConfigError
from postgate.daemon import service
from postgate.daemon.service import RELOAD_TIMEOUT, Daemon
from postgate.wire.policy_files import CorpusError, parse_policy_text

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from postgate.config.load import Config


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "postgate.toml"
    path.write_text(text)
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [str(p) for p in (*exc.errors, *exc.warnings)]
    return [str(p) for p in config.warnings]


class TestRefusedWithAPlace:
    def test_a_blocklist_attribute_that_is_a_list(self, tmp_path: Path) -> None:
        found = problems(tmp_path, '[[rules]]\nid = "A"\nblocklist = { attribute = [] }\n')
        assert ["blocklist.attribute: must be one of"] == [
            p.split(" (A).")[1][:35] for p in found if "(A)." in p
        ]

    def test_toml_nested_too_deeply(self, tmp_path: Path) -> None:
        found = problems(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n")
        assert [f"{tmp_path / 'postgate.toml'}: not a configuration: nested too deeply"] == found

    def test_a_list_file_name_with_nul(self, tmp_path: Path) -> None:
        text = '[lists.x]\ntype = "domain"\nfile = "a\\u0000b"\n'
        assert any(
            "lists.x.file: must be a file name (without NUL bytes)" in p
            for p in problems(tmp_path, text)
        )

    @pytest.mark.parametrize("where", ["list", "config"])
    def test_a_fifo_is_refused_not_waited_on(self, tmp_path: Path, where: str) -> None:
        os.mkfifo(tmp_path / "fifo")
        if where == "config":
            with pytest.raises(ConfigError) as refused:
                load_config(tmp_path / "fifo")
            found = [str(p) for p in refused.value.errors]
        else:
            found = problems(tmp_path, '[lists.x]\ntype = "domain"\nfile = "fifo"\n')
        assert any(p.endswith("not a regular file") for p in found), found

    def test_a_key_with_a_newline_cannot_forge_a_line(self, tmp_path: Path) -> None:
        found = problems(tmp_path, '[daemon]\n"a\\nerror: forged: line" = 1\n')
        assert [1] == [len(p.splitlines()) for p in found]
        assert "daemon.a\\nerror: forged: line: unknown key" in found[0]

    def test_allow_entries_with_host_bits_warn(self, tmp_path: Path) -> None:
        found = problems(tmp_path, '[daemon]\nallow = ["10.1.2.3/0"]\n')
        assert ["daemon.allow[0]: '10.1.2.3/0' has host bits set; using 0.0.0.0/0"] == [
            p.split(": ", 1)[1] for p in found
        ]


class TestRequestFileTimes:
    @pytest.mark.parametrize(
        "value", ["nan", "inf", "-inf", "1e18", "-1e12", "0001-01-01T00:00:00-01:00x"]
    )
    def test_times_no_recording_can_hold_are_refused(self, value: str) -> None:
        with pytest.raises(CorpusError, match="time"):
            parse_policy_text(f"# time: {value}\nrequest=smtpd_access_policy\n", "t.policy")


class ThreadedClock(MemoryReactorClock):
    """A memory reactor that takes calls from threads, run when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, f: Callable[..., Any], *args: Any, **_: Any) -> None:
        self.from_threads.put((f, args))

    def run_from_threads(self) -> None:
        f, args = self.from_threads.get(timeout=10.0)
        f(*args)


class QuietNotify:
    def ready(self, status: str) -> None: ...
    def reloading(self) -> None: ...
    def status(self, text: str) -> None: ...
    def stopping(self) -> None: ...
    def watchdog_interval(self) -> float | None:
        return None

    def ping(self) -> None: ...


class TestStuckReload:
    def test_a_stuck_reload_times_out_and_holds_no_second_thread(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text('[[rules]]\nid = "OLD"\naction = "DUNNO"\n')
        config = load_config(path)
        reactor = ThreadedClock()
        listen = ("tcp:0:interface=127.0.0.1",)
        daemon = Daemon(config, reactor, QuietNotify(), listen)  # type: ignore[arg-type]
        hung = threading.Event()
        calls: list[str] = []

        def load(p: Path) -> Config:
            calls.append("load")
            if len(calls) == 1:
                hung.wait(10.0)  # a read on a hung mount
            return load_config(p)

        monkeypatch.setattr(service, "load_config", load)
        with capture_logs() as logs:
            daemon.reload()
            reactor.advance(RELOAD_TIMEOUT)
            path.write_text('[[rules]]\nid = "NEW"\naction = "DUNNO"\n')
            daemon.reload()  # refused: the first load still holds its thread
            hung.set()
            reactor.run_from_threads()  # the stuck load's late result is dropped
            assert daemon._stuck is not None
            daemon._stuck.join(10.0)
            daemon.reload()
            reactor.run_from_threads()
        events = [e["event"] for e in logs if e["event"].startswith("config_")]
        assert ["config_reload_failed", "config_reload_failed", "config_reloaded"] == events
        assert "NEW" == daemon.answerer.config.ruleset.nodes[0].id
