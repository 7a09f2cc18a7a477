"""Configuration loading and `postgate check`: every problem as FILE: place: reason."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from postgate.commands.cli import main
from postgate.commands.replay import EX_CONFIG, LoadError, load_engine
from postgate.config.load import DEFAULT_LISTEN, load_config
from postgate.config.problems import ConfigError


def run_check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["check", "-c", str(path)])
    return status, out.getvalue(), err.getvalue()


GOOD = """\
[daemon]
listen = ["tcp:10040:interface=127.0.0.1"]

[lists.mynetworks]
type = "network"
items = ["127.0.0.0/8"]

[[rules]]
id = "TRUSTED"
client_address = { list = "mynetworks" }
action = "OK"
"""

# (config text, expected place, a phrase of the reason)
BROKEN = [
    ("[daemon\nlisten = 1\n", "", "not valid TOML"),
    ("[deamon]\n", "deamon", "did you mean 'daemon'"),
    ('[daemon]\nlisten = ["udp:53"]\n', "daemon.listen[0]", "endpoint type 'udp'"),
    ('[daemon]\nlisten = "tcp:10040"\n', "daemon.listen", "must be a list of strings"),
    ('[daemon]\nallow = ["10.0.0.0/33"]\n', "daemon.allow[0]", "'10.0.0.0/33' is not a network"),
    (
        "[daemon]\nmax_line_bytes = 1000000\nmax_request_bytes = 2000\n",
        "daemon.max_line_bytes",
        "must not exceed",
    ),
    ("[daemon]\nrequest_timeout = -1\n", "daemon.request_timeout", "must be a number in 0.1..3600"),
    ('[daemon]\non_error = "550"\n', "daemon.on_error", "550"),
    ('[daemon]\nlog_level = "loud"\n', "daemon.log_level", "'loud' is not one of"),
    ("[daemon]\ndry_run = 1\n", "daemon.dry_run", "must be true or false"),
    ("[daemon]\nlisten_on = []\n", "daemon.listen_on", "did you mean 'listen'"),
    ('[record]\npth = "x"\n', "record.pth", "unknown key (did you mean 'path'?)"),
    ("[record]\nkeep = -1\n", "record.keep", "must be a whole number in 0..1000, not -1"),
    (
        '[lists.d]\ntype = "domain"\nitems = ["a.example"]\nsubdomains = 1\n',
        "lists.d.subdomains",
        "must be true or false, not 1",
    ),
    (
        (
            '[[rules]]\nid = "BAD_NET"\n'
            'client_address = { network = ["10.0.0.0/33"] }\naction = "DUNNO"\n'
        ),
        "rules[0] (BAD_NET).client_address.network[0]",
        "'10.0.0.0/33' is not a network",
    ),
    (
        '[[rules]]\nid = "MISMATCH"\naction = "554 4.7.1 No"\n',
        "rules[0] (MISMATCH).action",
        "5.7.1",
    ),
    (
        '[lists.gone]\ntype = "domain"\nfile = "no-such-file.txt"\n',
        "lists.gone.file",
        "no-such-file.txt",
    ),
]


class TestLoad:
    def test_good_config_loads_with_defaults(self, tmp_path: Path) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text(GOOD)
        config = load_config(path)
        assert (DEFAULT_LISTEN, 1, False) == (
            config.daemon.listen,
            config.ruleset.rule_count,
            config.daemon.dry_run,
        )

    def test_missing_file_is_one_problem(self, tmp_path: Path) -> None:
        """A file that does not exist is reported with its path, not a traceback."""
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert [f"{path}: cannot read: No such file or directory"] == [
            str(p) for p in caught.value.errors
        ]

    def test_all_problems_are_reported_at_once(self, tmp_path: Path) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text('[daemon]\nlog_level = "loud"\ndry_run = 1\nallow = ["x"]\n')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        expected = {"daemon.allow[0]", "daemon.log_level", "daemon.dry_run"}
        assert expected == {p.place for p in caught.value.errors}


# (config text, place of its one unknown key): one in each kind of table.
UNKNOWN_KEYS = [
    ("[deamon]\n", "deamon"),
    ("[daemon]\nlisten_on = []\n", "daemon.listen_on"),
    ('[record]\npth = "x"\n', "record.pth"),
    ('[lists.x]\ntype = "string"\nitem = ["a"]\n', "lists.x.item"),
    ('[[rules]]\nid = "R"\naction = "OK"\nactoin = "x"\n', "rules[0].actoin"),
    ('[[rules]]\nid = "R"\naction = "OK"\nhelo_name = { regx = "a" }\n', "rules[0].helo_name.regx"),
]


class TestUnknownKeys:
    @pytest.mark.parametrize(("text", "place"), UNKNOWN_KEYS)
    def test_every_table_words_an_unknown_key_alike(
        self, tmp_path: Path, text: str, place: str
    ) -> None:
        """Each table names the key's place, the closest known key and all known keys."""
        path = tmp_path / "postgate.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        reasons = [p.reason for p in caught.value.errors if p.place == place]
        assert 1 == len(reasons), caught.value
        assert reasons[0].startswith("unknown key (did you mean '"), reasons[0]
        assert "'?); known: " in reasons[0], reasons[0]


class TestCheckCommand:
    @pytest.mark.parametrize(("text", "place", "reason"), BROKEN)
    def test_broken_config_names_file_place_and_reason(
        self, tmp_path: Path, text: str, place: str, reason: str
    ) -> None:
        """`postgate check` exits 78 and prints FILE:LINE: place: reason for the mistake."""
        path = tmp_path / "postgate.toml"
        path.write_text(text)
        status, out, err = run_check(path)
        where = re.escape(f"error: {path}") + r"(:\d+)?: "
        prefix = re.compile(where + re.escape(f"{place}: ") if place else where)
        lines = [line for line in err.splitlines() if prefix.match(line)]
        assert (EX_CONFIG, "") == (status, out)
        assert lines, err
        assert reason in lines[0], err

    def test_replay_tools_print_what_check_prints(self, tmp_path: Path) -> None:
        """A refused and an accepted-with-warnings config read the same in check and replay."""
        refused, warned = tmp_path / "refused.toml", tmp_path / "warned.toml"
        refused.write_text(
            '[daemon]\ndry_run = 1\n[lists.unused]\ntype = "string"\nitems = ["a"]\n'
        )
        warned.write_text('[lists.unused]\ntype = "string"\nitems = ["a"]\n')
        with pytest.raises(LoadError) as caught:
            load_engine(refused)
        shown = [str(caught.value), "\n".join(load_engine(warned).warnings)]
        assert [run_check(refused)[2].rstrip("\n"), run_check(warned)[2].rstrip("\n")] == shown
        assert (True, True) == (shown[0].startswith("error: "), shown[1].startswith("warning: "))

    def test_good_config_exits_zero(self, tmp_path: Path) -> None:
        """A valid file passes with a one-line summary on stdout."""
        path = tmp_path / "postgate.toml"
        path.write_text(GOOD)
        status, out, err = run_check(path)
        assert (0, "") == (status, err)
        assert out.startswith(f"{path}: OK, 1 rules, digest ")

    def test_shipped_configs_pass(self) -> None:
        root = Path(__file__).resolve().parents[2] / "conf"
        results = {p.name: run_check(p)[0] for p in sorted(root.rglob("*.toml"))}
        assert results
        assert dict.fromkeys(results, 0) == results
