"""The daemon, replay and the pytest plugin answer through one step: byte for byte the same.

The 80 reference cases (conf/examples/test_reference.policy) and 10,000
requests made from them are answered by `postgate replay`'s evaluation in
process; the running daemon must send exactly those bytes over TCP, and the
pytest plugin must pass a request file that expects exactly those answers.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from postgate.commands.replay import evaluate, load_engine
from postgate.wire.codec import PolicyRequest, encode_request
from postgate.wire.policy_files import Case, read_policy_file
from tests.integration.support.daemon import Daemon, drive
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from postgate.commands.replay import Outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"
CONNECTIONS = 20
GENERATED = 10_000


def generated(seeds: list[Case], count: int) -> list[Case]:
    """Requests like the seeds, with other ports, instances and people (seeded)."""
    rng = random.Random(15)
    cases = []
    for n in range(count):
        attrs = seeds[n % len(seeds)].request.as_dict()
        attrs["client_port"] = str(rng.randint(1024, 65535))
        attrs["instance"] = f"{n:x}.{rng.getrandbits(32):08x}.0"
        for name in ("recipient", "sender"):
            local, at, domain = attrs.get(name, "").rpartition("@")
            if at and local and rng.random() < 0.5:
                attrs[name] = f"u{n}.{rng.randint(0, 99)}@{domain}"
        cases.append(Case(PolicyRequest(attrs), None, None, "", "generated", n + 1))
    return cases


def config_file(tmp_path: Path, port: int) -> Path:
    shutil.copytree(EXAMPLES / "lists", tmp_path / "lists")
    config = tmp_path / "postgate.toml"
    head = f'[daemon]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n\n'
    config.write_text(head + (EXAMPLES / "reference.toml").read_text())
    return config


def policy_file(path: Path, outcomes: list[Outcome]) -> None:
    """A test file that expects, for every request, the answer replay gave."""
    blocks = ["# config: postgate.toml\n"]
    for n, outcome in enumerate(outcomes):
        lines = [f"# name: r{n}", f"# expect: {outcome.answer}", f"# expect-rule: {outcome.rule}"]
        lines += [f"{name}={value}" for name, value in outcome.case.request.items()]
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks))


def test_daemon_replay_and_plugin_give_the_same_bytes(tmp_path: Path) -> None:
    port = free_port()
    config = config_file(tmp_path, port)
    engine = load_engine(config)
    seeds = read_policy_file(EXAMPLES / "test_reference.policy")
    cases = seeds + generated(seeds, GENERATED)
    outcomes = [evaluate(engine, case) for case in cases]
    pairs = [(encode_request(o.case.request.as_dict()), o.wire) for o in outcomes]

    def conversation(conn: int) -> Iterator[tuple[bytes, bytes]]:
        return iter(pairs[conn::CONNECTIONS])

    with Daemon(config) as daemon:
        answered, wrong = drive(
            ("127.0.0.1", port), socket.AF_INET, CONNECTIONS, conversation, 4096
        )
        assert 0 == daemon.stop()
    assert (80 + GENERATED, []) == (answered, wrong[:3])

    policy_file(tmp_path / "test_all.policy", outcomes)
    plugin = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_all.policy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert f"{80 + GENERATED} passed" in plugin.stdout.splitlines()[-1], plugin.stdout[-2000:]
