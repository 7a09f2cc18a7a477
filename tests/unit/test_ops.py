"""The operations tables ([control], [metrics], [log]), the control registry and the stats."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from postgate.config.load import load_config
from postgate.config.ops import ControlSettings, LogSettings
from postgate.config.problems import ConfigError
from postgate.daemon.control import CommandError, Control, endpoint
from postgate.daemon.redact import redactor
from postgate.daemon.service import Daemon
from postgate.daemon.stats import Stats, action_class, classes
from postgate.daemon.status import status
from postgate.replies.parsing import parse_action

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

SETTINGS = ControlSettings(socket=Path("/run/x:y.sock"))
RULE = '[[rules]]\nid = "R"\nhelo_name = "x"\naction = "450 4.7.1 later"\n'


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "postgate.toml"
    path.write_text(text + RULE)
    return load_config(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [str(p) for p in caught.value.errors]


class TestTables:
    def test_defaults_are_off(self, tmp_path: Path) -> None:
        config = load_config(_write(tmp_path, RULE))
        assert config.control.socket is None
        assert config.metrics.listen == ""
        assert not config.log.redacts

    def test_values_are_read(self, tmp_path: Path) -> None:
        text = (
            '[control]\nsocket = "run/c.sock"\nmode = "600"\nallow_users = ["0"]\n'
            '[metrics]\nlisten = "tcp:9040:interface=127.0.0.1"\nallow = ["10.0.0.0/8"]\n'
            '[log]\naddresses = "hash"\nkey = "log.key"\nclient_address = "network"\n'
        )
        config = load_config(_write(tmp_path, text + RULE))
        assert config.control.socket == tmp_path / "run/c.sock"
        assert (config.control.mode, config.control.allow_uids) == (0o600, frozenset({0}))
        assert config.metrics.allow == ("10.0.0.0/8",)
        assert (config.log.addresses, config.log.key) == ("hash", tmp_path / "log.key")

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[control]\nmode = "666"\n', "control.mode: '666' is not one of"),
            ('[control]\nallow_users = ["no-such-user-here"]\n', "no such user"),
            ('[metrics]\nlisten = "9040"\n', "metrics.listen: '9040': endpoint type"),
            ('[metrics]\nallow = ["300.1.1.1"]\n', "metrics.allow[0]"),
            ('[log]\naddresses = "hash"\n', "log.addresses: hashing needs log.key"),
            ('[log]\naddresses = "scramble"\n', "log.addresses: 'scramble' is not one of"),
            ("[log]\nmystery = 1\n", "log.mystery: unknown key"),
        ],
    )
    def test_mistakes_are_reported_at_their_place(
        self, tmp_path: Path, text: str, expected: str
    ) -> None:
        found = errors(tmp_path, text)
        assert any(expected in line for line in found), found


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postgate.toml"
    path.write_text(text)
    return path


class TestControl:
    def control(self) -> Control:
        return Control(SETTINGS, Clock())

    def result(self, found: Deferred[object]) -> object:
        got: list[object] = []
        found.addBoth(got.append)
        return got[0]

    def test_registered_command_gets_its_args(self) -> None:
        control = self.control()
        control.register("echo", lambda args: {"got": args})
        assert {"got": {"a": 1}} == self.result(
            control.run(b'{"command": "echo", "args": {"a": 1}}')
        )

    def test_names_are_one_word_and_registered_once(self) -> None:
        control = self.control()
        control.register("state", lambda _: None)
        with pytest.raises(ValueError, match="already registered"):
            control.register("state", lambda _: None)
        with pytest.raises(ValueError, match="not one word"):
            control.register("two words", lambda _: None)

    def test_unknown_command_lists_the_known(self) -> None:
        control = self.control()
        control.register("status", lambda _: None)
        with pytest.raises(CommandError, match="unknown command 'x'; known: status"):
            control.run(b'{"command": "x"}')

    def test_own_user_and_root_are_always_allowed(self) -> None:
        assert {0, os.getuid()} <= self.control().peers.allow_uids

    def test_endpoint_escapes_colons(self) -> None:
        assert r"unix:/run/x\:y.sock:mode=660:lockfile=1" == endpoint(SETTINGS)


class TestStats:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("554 5.7.1 no", "5xx"),
            ("REJECT", "5xx"),
            ("DEFER_IF_PERMIT later", "4xx"),
            ("DUNNO", "DUNNO"),
            ("OK", "OK"),
            ("HOLD", "other"),
            ("PREPEND X-A: b", "other"),
        ],
    )
    def test_action_class(self, line: str, expected: str) -> None:
        assert expected == action_class(parse_action(line).action)

    def test_reload_settles_counts_under_the_old_class(self, tmp_path: Path) -> None:
        first = load_config(_write(tmp_path, RULE))
        stats = Stats(first)
        assert classes(first) == {"DEFAULT": "DUNNO", "ON_ERROR": "DUNNO", "R": "4xx"}
        stats.decisions["R"] = 2
        second = load_config(_write(tmp_path, RULE.replace("450 4.7.1 later", "OK")))
        stats.reconfigure(second)
        stats.decisions["R"] = 1
        counted = {key: n for key, n in stats.by_class().items() if n}
        assert {("R", "4xx"): 2, ("R", "OK"): 1} == counted
        assert 0 == stats.by_class()[("DEFAULT", "DUNNO")]  # every rule's series from the start


class TestRedact:
    RAW: Final = {
        "protocol_state": "RCPT",
        "client_address": "192.0.2.77",
        "sender": "alice@example.org",
        "recipient": "bob@example.net",
        "helo_name": "mx.example.org",
    }

    def test_keep_is_no_redactor_at_all(self) -> None:
        assert redactor(LogSettings()) is None

    def test_hash_is_stable_keyed_and_keeps_the_domain(self, tmp_path: Path) -> None:
        fields = redactor(LogSettings("hash", "keep", tmp_path / "k"))
        assert fields is not None
        shown = fields(self.RAW)
        assert re.fullmatch(r"h-[0-9a-f]{12}@example\.org", shown["sender"])
        assert shown == fields(self.RAW)
        assert "192.0.2.77" == shown["client_address"]
        assert "helo_name" not in shown
        other = redactor(LogSettings("hash", "keep", tmp_path / "other-key"))
        assert other is not None
        assert shown["sender"] != other(self.RAW)["sender"]

    @pytest.mark.parametrize(
        ("client", "value", "expected"),
        [
            ("network", "192.0.2.77", "192.0.2.0/24"),
            ("network", "2001:db8:1:2::5", "2001:db8:1::/48"),
            ("network", "unknown", "unknown"),
            ("network", "garbage", ""),
            ("drop", "192.0.2.77", ""),
        ],
    )
    def test_client_address(self, client: str, value: str, expected: str) -> None:
        fields = redactor(LogSettings("keep", client))
        assert fields is not None
        assert expected == fields(self.RAW | {"client_address": value})["client_address"]

    def test_drop_keeps_the_domain_and_empty_stays_empty(self) -> None:
        fields = redactor(LogSettings("drop", "keep"))
        assert fields is not None
        assert ("@example.org", "") == (
            fields(self.RAW)["sender"],
            fields(self.RAW | {"sender": ""})["sender"],
        )

    def test_an_unreadable_key_drops_instead(self, tmp_path: Path) -> None:
        (tmp_path / "short.key").write_bytes(b"x")
        fields = redactor(LogSettings("hash", "keep", tmp_path / "short.key"))
        assert fields is not None
        assert "@example.org" == fields(self.RAW)["sender"]


class TestStatusParts:
    def test_a_feature_adds_its_part_and_the_command_answers(self, tmp_path: Path) -> None:
        config = load_config(_write(tmp_path, RULE))
        daemon = Daemon(config, MemoryReactorClock(), _Quiet())  # type: ignore[arg-type]
        assert status(daemon)["state"] is None
        daemon.status_parts["state"] = lambda: {"backend": "embedded", "up": True}
        found: list[object] = []
        daemon.control.run(b'{"command": "status"}').addBoth(found.append)
        report = found[0]
        assert isinstance(report, dict)
        assert {"backend": "embedded", "up": True} == report["state"]
        assert config.ruleset.digest == report["digest"]


class _Quiet:
    def ready(self, status: str) -> None: ...
    def reloading(self) -> None: ...
    def status(self, text: str) -> None: ...
    def stopping(self) -> None: ...
    def watchdog_interval(self) -> float | None:
        return None

    def ping(self) -> None: ...
