"""README.md, then docs/install.md, run as written in a fresh clone.

Every ```sh block of the two pages runs in order, in one bash (``set -e``),
so ``. .venv/bin/activate`` in one block holds for the next, as it would for
an admin pasting them into one terminal. The README's blocks run in the
clone; install.md's absolute paths are moved under a temporary root. The
clone is of the working tree as it is (``git stash create`` when tracked
files have changes; a new file is seen once it is added to the index), so
the test checks the pages being edited.

An HTML comment on the line before a block says how the walk treats it:

* ``<!-- walk: skip (REASON) -->``: not run here (systemd as PID 1, system
  packages, this machine's Postfix); the reason is reported;
* ``<!-- walk: background (REASON) -->``: a daemon (``make run``): started in
  the background; the walk goes on once the daemon answers, asks it, and
  stops it at the end with SIGTERM, expecting a clean ``stopped``;
* ``<!-- walk: exit N (REASON) -->``: the block must end with status N;
* ``<!-- walk: relocate PATH... (REASON) -->``, once at the top of a page:
  these absolute paths are run under the temporary root.

One change is made to the clone: ``conf/postgate.toml`` listens on a free
port instead of 10040, so the walk never meets another daemon on this
machine; the commands find the port through the config, as written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.support.needs import need
from tests.integration.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/install.md")
WALK_TIMEOUT = 600
_FENCE = re.compile(r"^( *)```sh\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!-- walk: (skip|background|exit|relocate)\b ?([^(]*?)\s*(?:\((.*)\))? -->")
# What the pages promise the commands print (README), checked in the output.
PROMISED = (
    "action=DUNNO",
    "expectations: 80 held, 0 failed",
    "2 passed, 0 failed",
    "3 of 80 requests change their answer",
    "OK, 5 rules",
)


@dataclass(frozen=True, slots=True)
class Block:
    page: str
    line: int
    text: str
    mode: str = "run"  # run | skip | background | exit
    argument: str = ""
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str, text: str) -> list[Block]:
    """Every ```sh block of ``text`` with the walk marker on the line before it."""
    found = []
    for fence in _FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        before = text[: fence.start()].rstrip("\n ").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        body = textwrap.dedent(fence.group(2)) if fence.group(1) else fence.group(2)
        if marker is None:
            found.append(Block(page, line, body))
        else:
            mode, argument, reason = marker.group(1), marker.group(2), marker.group(3) or ""
            found.append(Block(page, line, body, mode, argument.strip(), reason))
    return found


def relocations(text: str) -> list[str]:
    for marker in _MARKER.finditer(text):
        if marker.group(1) == "relocate":
            return marker.group(2).split()
    return []


def script(clone: Path, root: Path, port: int) -> tuple[str, list[Block]]:
    """The bash script of both pages, and the blocks it leaves out."""
    parts = ["set -e -o pipefail"]
    skipped = []
    for page in PAGES:
        text = (clone / page).read_text()
        moved = relocations(text)
        workdir = clone if page == "README.md" else root
        parts.append(f"cd {workdir}")
        for block in blocks(page, text):
            body = block.text
            for path in moved:
                body = body.replace(path, f"{root}{path}")
            if block.mode == "skip":
                skipped.append(block)
                continue
            parts.append(f"echo '::walk {block.where}'")
            parts.append(_wrapped(block, body, root, port))
    parts.append("echo '::walk done'")
    return "\n".join(parts) + "\n", skipped


def _wrapped(block: Block, body: str, root: Path, port: int) -> str:
    if block.mode == "exit":
        return (
            f"set +e\n{body}\nstatus=$?\nset -e\n"
            f'[ "$status" = {int(block.argument)} ] || '
            f"{{ echo '::walk {block.where}: exit '$status', not {block.argument}'; exit 1; }}"
        )
    if block.mode == "background":
        log = root / f"background-{block.line}.log"
        return (
            f"(\n{body.strip()}\n) > {log} 2>&1 &\n"
            "job=$!\n"
            "for _ in $(seq 1 3000); do\n"
            f"  (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break\n"
            f"  kill -0 $job 2>/dev/null || {{ cat {log}; echo '::walk {block.where}: died'; "
            "exit 1; }\n"
            "  sleep 0.1\n"
            "done\n"
            f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null || "
            f"{{ cat {log}; echo '::walk {block.where}: never answered'; exit 1; }}"
        )
    return body


def fresh_clone(target: Path) -> None:
    """A clone of the working tree as it is now, edits of tracked files included."""
    snapshot = subprocess.run(
        ["git", "-C", str(REPO), "stash", "create"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    if snapshot:
        subprocess.run(["git", "-C", str(target), "checkout", "--quiet", snapshot], check=True)


def clean_path() -> str:
    """PATH without any virtualenv: `postgate` must come from what the pages install."""
    venv = os.environ.get("VIRTUAL_ENV", "")
    parts = os.environ.get("PATH", "").split(os.pathsep)
    keep = [p for p in parts if p and not (venv and p.startswith(venv)) and ".venv" not in p]
    return os.pathsep.join(keep)


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the walk's own process group (its bash, make, postgate), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Block], Path, Path]:
    for tool in ("git", "make", "bash"):
        if shutil.which(tool) is None:
            need(f"{tool} is not installed")
    root = tmp_path_factory.mktemp("walk")
    clone = root / "opt" / "postgate" / "src"
    fresh_clone(clone)
    port = free_port()
    config = clone / "conf" / "postgate.toml"
    config.write_text(config.read_text().replace("tcp:10040:", f"tcp:{port}:"))
    text, skipped = script(clone, root, port)
    (root / "walk.sh").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = clean_path()
    proc = subprocess.Popen(
        ["bash", str(root / "walk.sh")],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=WALK_TIMEOUT)
    finally:
        stop_group(proc)
    return output, skipped, root, clone


def test_every_block_runs(walk: tuple[str, list[Block], Path, Path]) -> None:
    """The walk reaches its end: no block of either page failed."""
    output, *_ = walk
    steps = re.findall(r"^::walk (.*)$", output, re.MULTILINE)
    assert steps, output[-6000:]
    assert "done" == steps[-1], output[-6000:]


def test_the_pages_print_what_they_promise(walk: tuple[str, list[Block], Path, Path]) -> None:
    output, *_ = walk
    assert [] == [claim for claim in PROMISED if claim not in output], output[-6000:]


def test_skipped_blocks_say_why(walk: tuple[str, list[Block], Path, Path]) -> None:
    _, skipped, *_ = walk
    assert skipped
    assert [] == [b.where for b in skipped if not b.reason]
    print("\n".join(f"skipped {b.where}: {b.reason}" for b in skipped))


def test_make_run_stopped_cleanly(walk: tuple[str, list[Block], Path, Path]) -> None:
    """SIGTERM ends the daemon `make run` started with its `stopped` line."""
    _, _, root, _ = walk
    logs = list(root.glob("background-*.log"))
    assert logs
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and '"event":"stopped"' not in logs[0].read_text():
        time.sleep(0.1)
    assert '"event":"stopped"' in logs[0].read_text(), logs[0].read_text()


def test_site_tests_do_not_break_the_repositorys_collection(
    walk: tuple[str, list[Block], Path, Path],
) -> None:
    """The test file README step 2 wrote is not collected by the project's own pytest."""
    _, _, _, clone = walk
    assert (clone / "conf" / "tests" / "test_site.policy").exists()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == done.returncode, done.stdout[-4000:] + done.stderr[-2000:]
    assert "test_site.policy" not in done.stdout
