"""The benchmark: postgate, postfwd and the protocol's ceiling, side by side in one run.

Each server is started fresh with the reference ruleset and the same
1,000-entry lists, loaded at 1, 10 and 50 lock-step connections by the
compiled load generator, and measured: requests/s, latency percentiles,
server CPU per request (whole process tree), memory, and every answer
checked against the oracle's expectation (`reference.py`). postfwd answers
about ten requests a second, so its levels are shorter, but each still
counts its answers over a full window after a warm-up.

Output in --out (default bench/out): results.json, results.md, throughput.png,
logs/ (each server's output, postgate's decision log included).
With --publish the table, checks and plot also go into docs/performance.md.

Run: .venv/bin/python bench/driver.py            (about 12 minutes)
     .venv/bin/python bench/driver.py --quick    (about 1 minute, for trying)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine
import paired
import report
import scrape
from measure import Level, Plan, run_level
from servers import (
    REPO,
    Ceiling,
    Endpoint,
    Postfwd,
    Postgate,
    Server,
    ensure_built,
    free_port,
    running,
    stop_on_signals,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from servers import Running

import corpus

BENCH: Final = Path(__file__).resolve().parent
SERVERS: Final = (
    "ceiling",
    "postfwd1",
    "postfwd2",
    "postgate",
    "postgate-recording",
    "postgate-venv",
    "postgate-baseline",
    "postgate-metrics",
)
SLOW: Final = frozenset({"postfwd1", "postfwd2"})
BUSY_CORES: Final = 0.1
TRANSPORTS: Final = {"tcp": "TCP on 127.0.0.1", "unix": "UNIX sockets"}
REFERENCE: Final = REPO / "conf" / "examples" / "reference.toml"
DOC: Final = REPO / "docs" / "performance.md"
DOC_PLOT: Final = REPO / "docs" / "performance.png"


@dataclass(frozen=True, slots=True)
class Settings:
    servers: tuple[str, ...]
    connections: tuple[int, ...]
    warmup: float
    duration: float
    slow_warmup: float
    slow_duration: float
    transport: str
    out: Path

    def plans(self, server: str) -> list[Plan]:
        slow = server in SLOW
        return [
            Plan(
                connections=n,
                warmup=self.slow_warmup if slow else self.warmup,
                duration=self.slow_duration if slow else self.duration,
                timeout=120.0 if slow else 30.0,
                check=server != "ceiling",
            )
            for n in self.connections
        ]


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--connections", default="1,10,50")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--slow-warmup", type=float, default=3.0, help="for postfwd")
    parser.add_argument("--slow-duration", type=float, default=10.0, help="for postfwd")
    parser.add_argument("--quick", action="store_true", help="3 s levels, 5 s for postfwd")
    parser.add_argument("--transport", choices=("tcp", "unix"), default="tcp")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20000, help="corpus size")
    parser.add_argument("--list-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--publish", action="store_true", help="update docs/performance.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    parser.add_argument(
        "--venv",
        type=Path,
        default=REPO / ".venv",
        help="the virtualenv postgate runs from (run.sh: one on the system python3)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a virtualenv with another revision of postgate (bench/baseline.sh makes one): "
        "measured as postgate-baseline, beside postgate, in the same run",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    if args.baseline is None:
        servers = tuple(s for s in servers if s != "postgate-baseline")
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    settings = Settings(
        servers=servers,
        connections=tuple(int(n) for n in args.connections.split(",")),
        warmup=1.0 if quick else args.warmup,
        duration=3.0 if quick else args.duration,
        slow_warmup=2.0 if quick else args.slow_warmup,
        slow_duration=5.0 if quick else args.slow_duration,
        transport=args.transport,
        out=args.out.resolve(),
    )
    return settings, args


def build(out: Path) -> tuple[Path, Path]:
    bins = BENCH / "bin"
    loadgen, ceiling = bins / "loadgen", bins / "ceiling"
    ensure_built(BENCH / "loadgen.c", loadgen, threads=True)
    ensure_built(BENCH / "ceiling.c", ceiling)
    out.mkdir(parents=True, exist_ok=True)
    return loadgen, ceiling


def ensure_corpus(directory: Path, seed: int, requests: int, list_size: int) -> dict[str, Any]:
    """Generate the corpus unless one with the same parameters is already there."""
    wanted = {
        "seed": seed,
        "requests": requests,
        "list_size": list_size,
        "generator": corpus.generator_digest(),
    }
    summary_path = directory / "summary.json"
    if summary_path.exists():
        summary: dict[str, Any] = json.loads(summary_path.read_text())
        if all(summary.get(k) == v for k, v in wanted.items()):
            return summary
    argv = ["--out", str(directory), "--seed", str(seed), "--requests", str(requests)]
    if corpus.main([*argv, "--list-size", str(list_size)]) != 0:
        raise RuntimeError("corpus generation failed")
    generated: dict[str, Any] = json.loads(summary_path.read_text())
    return generated


def postgate_config(reference: Path, directory: Path) -> Path:
    """Copy the reference config next to the bench lists and prove it reads only them."""
    config = directory / "postgate.toml"
    shutil.copyfile(reference, config)
    lists = (directory / "lists").resolve()
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    for name, table in doc.get("lists", {}).items():
        if "file" not in table:
            continue
        path = (directory / table["file"]).resolve()
        if path.parent != lists or not path.exists():
            raise RuntimeError(
                f"{reference}: lists.{name}.file = {table['file']!r} does not name one of the "
                f"bench lists in {lists} (expected lists/<name>.txt relative to the config)"
            )
    return config


def make_server(
    name: str, ceiling_bin: Path, corpus_dir: Path, venv: Path, baseline: Path | None
) -> Server:
    """``postgate-venv`` is postgate under the repository's own .venv, whatever its python."""
    if name == "ceiling":
        return Ceiling(ceiling_bin)
    if name in SLOW:
        return Postfwd(variant=name, lists=corpus_dir / "lists", name=name)
    variants = {
        "postgate-recording": lambda: recording_config(corpus_dir),
        scrape.NAME: lambda: scrape.metrics_config(corpus_dir, free_port()),
    }
    if name in variants:
        return Postgate(variants[name](), name=name, venv=venv)
    if name == "postgate-venv":
        return Postgate(corpus_dir / "postgate.toml", name=name)
    if name == "postgate-baseline" and baseline is not None:
        return Postgate(corpus_dir / "postgate.toml", name=name, venv=baseline)
    return Postgate(corpus_dir / "postgate.toml", venv=venv)


def recording_config(corpus_dir: Path) -> Path:
    """The bench config with recording on, to measure what recording costs.

    Every request and its decision is appended to a file in the output
    directory, rotated at 64 MiB with two old files kept.
    """
    config = corpus_dir / "postgate-recording.toml"
    recording = corpus_dir / "recording"
    recording.mkdir(exist_ok=True)
    text = (corpus_dir / "postgate.toml").read_text(encoding="utf-8")
    table = (
        f'\n[record]\npath = "{recording / "requests.policy"}"\n'
        "enabled = true\nmax_bytes = 67108864\nkeep = 2\n"
    )
    config.write_text(text + table, encoding="utf-8")
    return config


def endpoint(settings: Settings, name: str) -> Endpoint:
    if settings.transport == "unix":
        run = settings.out / "run"
        run.mkdir(parents=True, exist_ok=True)
        path = run / f"{name}.sock"
        path.unlink(missing_ok=True)
        return Endpoint(path=path)
    return Endpoint(port=free_port())


def measure_paired(
    settings: Settings, loadgen: Path, requests: Path, corpus_dir: Path, venv: Path, *, quick: bool
) -> paired.Paired:
    """Recording switched off and on in one daemon, every half second (`paired`)."""
    config = corpus_dir / "postgate-paired.toml"
    text = recording_config(corpus_dir).read_text(encoding="utf-8")
    # Every record of the run stays on disk to be counted: at 40,000 requests/s,
    # 120 s of "on" phases write about 45 files of 64 MiB; 100 are kept.
    config.write_text(
        text.replace("recording/requests.policy", "recording/paired/paired.policy")
        .replace("enabled = true", "enabled = false")
        .replace("keep = 2", "keep = 100"),
        encoding="utf-8",
    )
    recording = corpus_dir / "recording" / "paired" / "paired.policy"
    shutil.rmtree(recording.parent, ignore_errors=True)

    def start() -> AbstractContextManager[Running]:
        server = Postgate(config, name="postgate-paired", venv=venv)
        return running(server, endpoint(settings, server.name), settings.out)

    phases = paired.QUICK_PHASES if quick else paired.PHASES
    print(
        f"recording off and on in one daemon, switched every {paired.TICK} s for {phases} phases:",
        flush=True,
    )
    try:
        connections = report.HEADLINE_CONNECTIONS
        log = settings.out / "logs" / "postgate-paired.log"
        return paired.measure(
            start,
            recording,
            loadgen,
            requests,
            connections,
            print_level,
            dropped=lambda: paired.dropped_in(log),
            phases=phases,
        )
    finally:
        shutil.rmtree(recording.parent, ignore_errors=True)


def measure_server(
    server: Server, settings: Settings, loadgen: Path, requests: Path
) -> list[Level]:
    levels = []
    config = getattr(server, "config", None)
    watching = (
        scrape.scraping(config)
        if server.name == scrape.NAME and config
        else contextlib.nullcontext()
    )
    with running(server, endpoint(settings, server.name), settings.out) as live, watching:
        for plan in settings.plans(server.name):
            level = run_level(loadgen, requests, live, plan)
            levels.append(level)
            print_level(level)
    return levels


def print_level(level: Level) -> None:
    lat = level.latency_us
    verdict = "ok" if level.correct else f"WRONG {level.wrong} MALFORMED {level.malformed}"
    if level.error:
        verdict = f"ERROR {level.error}"
    print(
        f"  {level.server:9} {level.connections:3} conns: {level.rps:10,.1f} req/s  "
        f"p50 {lat['p50'] / 1000:8.2f} ms  p99 {lat['p99'] / 1000:8.2f} ms  "
        f"cpu {level.cpu_us_per_request:9.1f} µs/req  answers {verdict}",
        flush=True,
    )


def publish(markdown: str, plot: Path | None) -> None:
    report.publish(DOC, "results", markdown)
    if plot is not None:
        shutil.copyfile(plot, DOC_PLOT)


def results_markdown(
    levels: list[Level], found: list[report.Check], meta: dict[str, Any], skipped: dict[str, str]
) -> str:
    corpus_info = meta["corpus"]
    intro = (
        f"Run of {meta['finished']}: corpus of {corpus_info['requests']:,} requests "
        f"(seed {corpus_info['seed']}), lists of {corpus_info['list_size']:,} entries, "
        f"{TRANSPORTS[meta['transport']]}, levels of {meta['duration_s']:g} s after "
        f"{meta['warmup_s']:g} s warm-up ({meta['slow_duration_s']:g} s after "
        f"{meta['slow_warmup_s']:g} s for postfwd).\n"
    )
    busy = max((lv.other_cores_busy for lv in levels), default=0.0)
    if busy > BUSY_CORES:
        intro += (
            f"\n**The machine was not idle**: other work used up to {busy:.2f} cores during a "
            "level (column *other load*); the figures of those levels are lower than on an "
            "idle machine.\n"
        )
    parts = [
        intro,
        report.table(levels),
        report.checks_markdown(found),
        f"Machine:\n\n{report.machine_markdown(meta['machine'])}",
    ]
    if skipped:
        parts.append("Not run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    stop_on_signals()
    loadgen, ceiling_bin = build(settings.out)
    corpus_dir = settings.out / "corpus"
    summary = ensure_corpus(corpus_dir, args.seed, args.requests, args.list_size)
    requests = corpus_dir / "requests.txt"
    skipped: dict[str, str] = {}
    if any(name.startswith("postgate") for name in settings.servers):
        if REFERENCE.exists():
            postgate_config(REFERENCE, corpus_dir)
        else:
            skipped["postgate"] = f"{REFERENCE.relative_to(REPO)} does not exist yet"
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta: dict[str, Any] = {
        "started": started,
        "machine": machine.describe(args.venv / "bin/python", REPO / ".venv/bin/python"),
    }
    levels: list[Level] = []
    for name in settings.servers:
        baseline = args.baseline.resolve() if args.baseline else None
        server = make_server(name, ceiling_bin, corpus_dir, args.venv.resolve(), baseline)
        why = skipped.get(name) or server.available()
        if why:
            skipped[name] = why
            print(f"{name}: not run: {why}", flush=True)
            continue
        print(f"{name}:", flush=True)
        try:
            levels += measure_server(server, settings, loadgen, requests)
        except RuntimeError as exc:
            skipped[name] = f"failed: {exc}"
            print(f"  {name} failed: {exc}", flush=True)
    alternating: paired.Paired | None = None
    if {"postgate", "postgate-recording"} <= set(settings.servers) - set(skipped):
        venv = args.venv.resolve()
        alternating = measure_paired(
            settings, loadgen, requests, corpus_dir, venv, quick=args.quick
        )
    switched = [alternating.level] if alternating is not None else []
    meta |= {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_at_end": machine.loadavg(),
        "corpus": summary,
        "transport": settings.transport,
        "warmup_s": settings.warmup,
        "duration_s": settings.duration,
        "slow_warmup_s": settings.slow_warmup,
        "slow_duration_s": settings.slow_duration,
    }
    found = report.checks([*levels, *switched], alternating)
    results = {
        "meta": meta,
        "levels": [asdict(lv) for lv in levels],
        "paired": paired.as_json(alternating) if alternating is not None else None,
        "checks": [asdict(c) for c in found],
        "skipped": skipped,
    }
    (settings.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = results_markdown(levels, found, meta, skipped)
    (settings.out / "results.md").write_text(markdown)
    plot = None
    if not args.no_plot and levels:
        plot = settings.out / "throughput.png"
        report.plot(levels, plot)
    print("\n" + markdown)
    if args.publish:
        publish(markdown, plot)
    correct = all(lv.correct for lv in levels + switched) and not skipped
    checks_pass = all(c.passed is not False for c in found)
    return 0 if correct and (checks_pass or not args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
