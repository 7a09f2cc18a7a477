"""``make stress``: the long reliability runs: the bound each holds, the answers' latency.

Scenarios, each against a fresh daemon on the reference ruleset with the
benchmark corpus and recording on, while a probe sends requests in lock-step
at a steady rate and checks every answer against the corpus's expectation:

* soak: the probe alone for ``--minutes``; RSS and p99 sampled every minute;
* flood: 8 clients open and drop connections and send garbage as fast as
  they can;
* non-reading: 20 clients pipeline requests and never read their replies;
* log-stall: nobody reads the daemon's output (journald stalled);
* writer-stall: the recording's writer process is stopped (SIGSTOP), as a
  slow disk would stop it.

Results go to bench/out/stress.json and stress.md; ``--publish`` puts the
table into docs/reliability.md. Every loop is bounded in time, and only
loopback is used.

Run: .venv/bin/python bench/stress.py                     (about 65 minutes)
     .venv/bin/python bench/stress.py --minutes 2 --seconds 20   (a trial)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

import driver
from servers import REPO, free_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

OUT: Final = REPO / "bench" / "out"
DOC: Final = REPO / "docs" / "reliability.md"
MARK: Final = "<!-- stress results -->"


@dataclass
class Window:
    """What the probe saw over one stretch of time."""

    name: str
    seconds: float
    answers: int = 0
    wrong: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    sent_at: list[float] = field(default_factory=list, repr=False)  # monotonic, per latency
    rss_kib: list[int] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    def per_minute_p99(self) -> list[float]:
        """p99 of each whole minute: flat over a soak means nothing builds up."""
        if not self.sent_at:
            return []
        start = self.sent_at[0]
        minutes: dict[int, list[float]] = {}
        for at, ms in zip(self.sent_at, self.latencies_ms, strict=True):
            minutes.setdefault(int((at - start) // 60), []).append(ms)
        return [round(_p99(sorted(v)), 2) for _, v in sorted(minutes.items()) if len(v) > 100]

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms) or [0.0]
        return {
            "name": self.name,
            "seconds": round(self.seconds, 1),
            "answers": self.answers,
            "wrong": self.wrong,
            "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(_p99(lat), 2),
            "max_ms": round(lat[-1], 2),
            "rss_mib_first_last_max": [
                round(v / 1024, 1)
                for v in (self.rss_kib[:1] + self.rss_kib[-1:] + [max(self.rss_kib, default=0)])
            ],
            **self.notes,
        }


def _p99(ordered: list[float]) -> float:
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


class Daemon:
    """postgate with its output read by a thread that a scenario can pause."""

    def __init__(self, config: Path, port: int) -> None:
        argv = [str(REPO / ".venv/bin/postgate"), "run", "-c", str(config)]
        argv += ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.reading = threading.Event()
        self.reading.set()
        self.events: dict[str, int] = {}
        self.lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            for name in (b"log_lines_dropped", b"record_dropped", b"log_suppressed", b"peer_not"):
                if name in line:
                    self.lines.append(line)
            event = line.partition(b'"event":"')[2].partition(b'"')[0].decode(errors="replace")
            self.events[event] = self.events.get(event, 0) + 1
            self.reading.wait()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def children(self) -> list[int]:
        """The daemon's child processes (the recording's writer), whichever thread started them."""
        tasks = Path(f"/proc/{self.proc.pid}/task").glob("*/children")
        return [int(pid) for path in tasks for pid in path.read_text().split()]

    def stop(self) -> int:
        self.reading.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def corpus_pairs(path: Path) -> list[tuple[bytes, bytes]]:
    """(request bytes, expected reply bytes) from the benchmark corpus."""
    pairs = []
    for block in path.read_text().split("\n\n"):
        lines = block.strip().splitlines()
        expect = next((ln[10:] for ln in lines if ln.startswith("# expect: ")), None)
        attrs = [ln for ln in lines if ln and not ln.startswith("#")]
        if attrs and expect is not None:
            pairs.append(("\n".join(attrs).encode() + b"\n\n", f"action={expect}\n\n".encode()))
    return pairs


async def probe(
    port: int, pairs: list[tuple[bytes, bytes]], rate: float, seconds: float, window: Window
) -> None:
    """Lock-step connections that together send ``rate`` requests a second."""
    connections = 10
    interval = connections / rate
    stop = time.monotonic() + seconds

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = index
        next_at = time.monotonic()
        while (now := time.monotonic()) < stop:
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += interval
            request, expected = pairs[n % len(pairs)]
            n += connections
            sent = time.monotonic()
            writer.write(request)
            try:
                reply = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10.0)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                window.wrong += 1
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            window.latencies_ms.append((time.monotonic() - sent) * 1000)
            window.sent_at.append(sent)
            window.answers += 1
            window.wrong += reply != expected
        writer.close()

    await asyncio.gather(*(one(i) for i in range(connections)))


async def sample_rss(daemon: Daemon, window: Window, seconds: float, every: float) -> None:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        window.rss_kib.append(daemon.rss_kib())
        await asyncio.sleep(every)


async def flood(port: int, seconds: float) -> int:
    stop, attempts = time.monotonic() + seconds, 0

    async def one() -> None:
        nonlocal attempts
        while time.monotonic() < stop:
            attempts += 1
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"\x00garbage without an equals sign\n\n")
                writer.close()

    await asyncio.gather(*(one() for _ in range(8)))
    return attempts


async def non_readers(port: int, seconds: float, request: bytes) -> int:
    stop, sent = time.monotonic() + seconds, 0

    async def one() -> None:
        nonlocal sent
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop:
            writer.write(request * 100)
            sent += 100 * len(request)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                await asyncio.sleep(0.1)  # paused by the daemon: the bound holds
            except ConnectionError:  # cut off by the daemon: also a bound
                return
        writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(20)))
    return sent


@dataclass(frozen=True)
class Setup:
    config: Path
    pairs: list[tuple[bytes, bytes]]
    rate: float


def run(
    setup: Setup,
    name: str,
    seconds: float,
    extra: Callable[[Daemon, int], Awaitable[dict[str, object]]] | None,
) -> Window:
    port = free_port()
    daemon = Daemon(setup.config, port)
    window = Window(name, seconds)
    try:
        time.sleep(2.0)  # started, lists loaded

        async def scenario() -> None:
            tasks = [
                probe(port, setup.pairs, setup.rate, seconds, window),
                sample_rss(daemon, window, seconds, min(60.0, max(1.0, seconds / 20))),
            ]
            if extra is not None:

                async def side() -> None:
                    window.notes.update(await extra(daemon, port))

                tasks.append(side())
            await asyncio.gather(*tasks)

        asyncio.run(scenario())
        time.sleep(1.0)
    finally:
        window.notes["exit"] = daemon.stop()
        window.notes["events"] = {
            k: v for k, v in daemon.events.items() if k not in {"decision", "twisted"}
        }
    print(json.dumps(window.summary()), flush=True)
    return window


def scenarios(args: argparse.Namespace) -> dict[str, Callable[[Setup], Window]]:
    seconds = args.seconds

    def soak(setup: Setup) -> Window:
        window = run(setup, "soak", args.minutes * 60, None)
        window.notes["p99_ms_per_minute"] = window.per_minute_p99()
        return window

    async def flooding(_: Daemon, port: int) -> dict[str, object]:
        return {"flood_connections": await flood(port, seconds)}

    async def pipelining(_: Daemon, port: int) -> dict[str, object]:
        request = (
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient="
            + b"x" * 200
            + b"@example.com\n\n"
        )
        return {"non_reader_bytes_sent": await non_readers(port, seconds, request)}

    async def log_stall(daemon: Daemon, _: int) -> dict[str, object]:
        daemon.reading.clear()
        await asyncio.sleep(seconds)
        daemon.reading.set()
        return {}

    async def writer_stall(daemon: Daemon, _: int) -> dict[str, object]:
        # The writer starts with the first recorded request, just after the probe's.
        children, waited = daemon.children(), 0
        while not children and waited < 50:
            await asyncio.sleep(0.1)
            children, waited = daemon.children(), waited + 1
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(seconds)
        for pid in children:
            os.kill(pid, signal.SIGCONT)
        return {"writers_stopped": len(children)}

    return {
        "soak": soak,
        "flood": lambda s: run(s, "flood", seconds, flooding),
        "non-reading": lambda s: run(s, "non-reading", seconds, pipelining),
        "log-stall": lambda s: run(s, "log-stall", seconds, log_stall),
        "writer-stall": lambda s: run(s, "writer-stall", seconds, writer_stall),
    }


TABLED: Final = frozenset(
    {"name", "seconds", "answers", "wrong", "p50_ms", "p99_ms", "max_ms", "rss_mib_first_last_max"}
)


def markdown(windows: list[Window], started: str) -> str:
    head = (
        "| scenario | seconds | answers | wrong | p50 ms | p99 ms | max ms | RSS MiB 1st/last/max |"
    )
    lines = [f"Run of {started}.", "", head, "|---|---|---|---|---|---|---|---|"]
    for w in windows:
        s = w.summary()
        lines.append(
            f"| {s['name']} | {s['seconds']} | {s['answers']} | {s['wrong']} | {s['p50_ms']} "
            f"| {s['p99_ms']} | {s['max_ms']} | {s['rss_mib_first_last_max']} |"
        )
    lines.append("")
    for w in windows:
        notes = {
            k: v
            for k, v in w.summary().items()
            if k
            not in {
                "name",
                "seconds",
                "answers",
                "wrong",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "rss_mib_first_last_max",
            }
        }
        lines.append(f"- {w.name}: `{json.dumps(notes)}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="the soak's length")
    parser.add_argument("--seconds", type=float, default=60.0, help="each other scenario's length")
    parser.add_argument("--rate", type=float, default=500.0, help="the probe's requests a second")
    parser.add_argument("--only", default="", help="comma-separated scenarios")
    parser.add_argument("--publish", action="store_true", help="write into docs/reliability.md")
    args = parser.parse_args(argv)
    corpus_dir = OUT / "corpus"
    driver.ensure_corpus(corpus_dir, 1, 20000, 1000)
    driver.postgate_config(driver.REFERENCE, corpus_dir)
    setup = Setup(
        driver.recording_config(corpus_dir), corpus_pairs(corpus_dir / "requests.txt"), args.rate
    )
    chosen = [n for n in args.only.split(",") if n] or list(scenarios(args))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    windows = [scenarios(args)[name](setup) for name in chosen]
    OUT.mkdir(exist_ok=True)
    (OUT / "stress.json").write_text(json.dumps([w.summary() for w in windows], indent=2) + "\n")
    table = markdown(windows, started)
    (OUT / "stress.md").write_text(table)
    print(table)
    if args.publish:
        text = DOC.read_text()
        head, _, _ = text.partition(MARK)
        DOC.write_text(f"{head}{MARK}\n\n{table}")
    return 0 if all(w.wrong == 0 and w.notes.get("exit") == 0 for w in windows) else 1


if __name__ == "__main__":
    sys.exit(main())
