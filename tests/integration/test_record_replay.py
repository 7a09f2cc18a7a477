"""Record a real daemon's traffic over sockets, then replay it: the same decisions."""

from __future__ import annotations

import collections
import io
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from postgate.commands import rule_tests as admin
from postgate.commands.replay import Engine, check, evaluate, has_expectation, load_engine
from postgate.wire.codec import PolicyRequest, encode, encode_request
from postgate.wire.policy_files import Case, read_policy_file
from tests.integration.support.daemon import Daemon, ask, connect, drive
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"
SHIPPED = sum(map(has_expectation, read_policy_file(EXAMPLES / "test_reference.policy")))
CONNECTIONS = 50
PER_CONNECTION = 200  # 50 x 200 = 10,000 requests


def daemon_config(tmp_path: Path, port: int, recording: Path) -> Path:
    """The reference ruleset, listening on ``port``, recording with rotation."""
    shutil.copytree(EXAMPLES / "lists", tmp_path / "lists")
    head = (
        f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\nlog_level = "info"\n\n'
        f'[record]\npath = "{recording}"\nenabled = true\nmax_bytes = 1048576\nkeep = 100\n\n'
    )
    config = tmp_path / "postgate.toml"
    config.write_text(head + (EXAMPLES / "reference.toml").read_text())
    return config


def varied(seed: Case, n: int, rng: random.Random) -> dict[str, str]:
    """A request like ``seed`` from another connection, often with other people."""
    attrs = seed.request.as_dict()
    attrs["client_port"] = str(rng.randint(1024, 65535))
    attrs["instance"] = f"{n:x}.{rng.getrandbits(32):08x}.0"
    for name, chance in (("recipient", 0.5), ("sender", 0.3)):
        local, at, domain = attrs.get(name, "").rpartition("@")
        if at and local and rng.random() < chance:
            attrs[name] = f"u{n}.{rng.randint(0, 99)}@{domain}"
    return attrs


def traffic(engine: Engine) -> list[list[tuple[bytes, bytes]]]:
    """10,000 (request, expected reply) pairs, the reply from the in-process engine."""
    seeds = read_policy_file(EXAMPLES / "test_reference.policy")
    rng = random.Random(5)
    plan: list[list[tuple[bytes, bytes]]] = []
    for conn in range(CONNECTIONS):
        pairs = []
        for i in range(PER_CONNECTION):
            n = conn * PER_CONNECTION + i
            attrs = varied(seeds[n % len(seeds)], n, rng)
            case = Case(PolicyRequest(attrs), None, None, "", "traffic", n)
            pairs.append((encode_request(attrs), encode(evaluate(engine, case).answer)))
        plan.append(pairs)
    return plan


def recordings(path: Path) -> list[Path]:
    """The recording and its rotated files, oldest first."""
    rotated = sorted(path.parent.glob(path.name + ".*[0-9]"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, path]


class TestRecordThenReplay:
    def test_ten_thousand_recorded_requests_replay_to_the_same_decisions(
        self, tmp_path: Path
    ) -> None:
        """Every request sent over a socket is recorded once, and replays to its decision."""
        port = free_port()
        recording = tmp_path / "rec" / "requests.policy"
        config = daemon_config(tmp_path, port, recording)
        engine = load_engine(config)
        plan = traffic(engine)

        def conversation(conn: int) -> Iterator[tuple[bytes, bytes]]:
            return iter(plan[conn])

        with Daemon(config) as daemon:
            answered, wrong = drive(
                ("127.0.0.1", port), socket.AF_INET, CONNECTIONS, conversation, 4096
            )
            status = daemon.stop()
        assert (10_000, [], 0) == (answered, wrong[:3], status)
        assert "record_dropped" not in daemon.log()

        files = recordings(recording)
        cases = [case for path in files for case in read_policy_file(path)]
        sent = collections.Counter(request for pairs in plan for request, _ in pairs)
        recorded = collections.Counter(encode_request(case.request.as_dict()) for case in cases)
        assert sent == recorded
        failed = [case for case in cases if check(evaluate(engine, case))]
        assert [] == failed
        assert len(files) > 1  # rotated by size on the way

        out = io.StringIO()
        argv = ["-c", str(config), *map(str, files)]
        assert 0 == admin.replay_main(argv, out, io.StringIO())
        assert out.getvalue().endswith("expectations: 10000 held, 0 failed\n")


class TestSwitchingWithoutRestart:
    def test_sigusr1_turns_recording_on_and_off(self, tmp_path: Path) -> None:
        """Off at start; SIGUSR1 on, SIGUSR1 off: only the request in between is recorded."""
        port = free_port()
        recording = tmp_path / "requests.policy"
        config = daemon_config(tmp_path, port, recording)
        config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
        seeds = read_policy_file(EXAMPLES / "test_reference.policy")
        attrs = [varied(seeds[0], n, random.Random(n)) for n in range(3)]
        with Daemon(config) as daemon:
            sock = connect(("127.0.0.1", port), socket.AF_INET)
            ask(sock, attrs[0])
            for step, request in enumerate(attrs[1:], start=1):
                daemon.signal(signal.SIGUSR1)
                daemon.wait_for_log('"event":"recording"', count=step)
                ask(sock, request)
            sock.close()
            daemon.stop()
        assert [attrs[1]] == [case.request.as_dict() for case in read_policy_file(recording)]
        assert '"enabled":true' in daemon.log()


class TestCommandLine:
    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "postgate", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def test_replay_of_the_shipped_tests_exits_zero(self) -> None:
        """`postgate replay` checks conf/examples/test_reference.policy and passes."""
        done = self.run(
            "replay",
            "-c",
            str(EXAMPLES / "reference.toml"),
            str(EXAMPLES / "test_reference.policy"),
        )
        held = f"expectations: {SHIPPED} held, 0 failed"
        assert (0, held) == (done.returncode, done.stdout.splitlines()[-1])

    def test_diff_against_the_variant_exits_one(self) -> None:
        """`postgate diff` of reference and variant reports the SPAMTRAP requests."""
        done = self.run(
            "diff",
            "-c",
            str(EXAMPLES / "reference.toml"),
            "-c",
            str(EXAMPLES / "rules-variant.toml"),
            str(EXAMPLES / "test_reference.policy"),
        )
        cases = read_policy_file(EXAMPLES / "test_reference.policy")
        engine = load_engine(EXAMPLES / "reference.toml")
        trapped = sum(evaluate(engine, case).rule == "SPAMTRAP" for case in cases)
        headline = f"{trapped} of {len(cases)} requests change their answer"
        assert (1, headline) == (done.returncode, done.stdout.splitlines()[2])

    def test_test_command_runs_a_directory(self, tmp_path: Path) -> None:
        """`postgate test DIR` finds test_*.policy files and prints the tally."""
        shutil.copytree(EXAMPLES / "lists", tmp_path / "lists")
        # The policy file names its config (`# config: reference.toml`).
        shutil.copy(EXAMPLES / "reference.toml", tmp_path / "reference.toml")
        shutil.copy(EXAMPLES / "test_reference.policy", tmp_path / "test_reference.policy")
        done = self.run("test", "-c", str(tmp_path / "reference.toml"))
        tally = f"{SHIPPED} passed, 0 failed"
        assert (0, tally) == (done.returncode, done.stdout.splitlines()[-1])
