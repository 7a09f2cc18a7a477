"""Memory check: postgate with 100,000-entry lists, over millions of requests.

Starts postgate with the reference ruleset and lists of --list-size entries
(network, domain, address and fingerprint lists alike), reads its resident
memory once it is ready, then keeps it under lock-step load for --requests
requests, sampling memory every --every seconds, and reads it again at the
end. Growth is measured from the first sample under load (caches warm,
buffers allocated) to the last, so start-up allocation is not counted as a
leak. Every answer is checked as in the main benchmark; the decision log
stays on but goes to /dev/null (5 million lines would fill a disk for no use).

Output: --out/memory.json and memory.md.
Run: .venv/bin/python bench/memory.py [--requests 5000000] [--list-size 100000]
     (about 6 minutes at 15,000 requests/s)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
import report
from driver import BENCH, DOC, REFERENCE, build, ensure_corpus, postgate_config
from measure import Level, Plan, run_level
from servers import REPO, Endpoint, Postgate, free_port, running, stop_on_signals


@dataclass(frozen=True, slots=True)
class Sample:
    replies: int
    seconds: float
    rss_kb: int
    hwm_kb: int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--list-size", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    parser.add_argument("--publish", action="store_true", help="update docs/performance.md")
    parser.add_argument(
        "--venv", type=Path, default=REPO / ".venv", help="the virtualenv postgate runs from"
    )
    args = parser.parse_args(argv)
    stop_on_signals()
    out = args.out.resolve()
    if not REFERENCE.exists():
        print(f"memory: {REFERENCE} does not exist yet; nothing to measure")
        return 1
    loadgen, _ = build(out)
    corpus_dir = out / "memory" / "corpus"
    started = time.monotonic()
    ensure_corpus(corpus_dir, seed=1, requests=20000, list_size=args.list_size)
    print(f"corpus and lists of {args.list_size:,} ready in {time.monotonic() - started:.1f} s")
    server = Postgate(
        postgate_config(REFERENCE, corpus_dir), discard_log=True, venv=args.venv.resolve()
    )
    plan = Plan(args.connections, warmup=0.0, requests=args.requests, progress=args.every)
    samples: list[Sample] = []
    with running(server, Endpoint(port=free_port()), out / "memory") as live:
        clock = time.monotonic()
        samples.append(_sample(live.pid, 0, clock))

        def on_progress(replies: int) -> None:
            samples.append(_sample(live.pid, replies, clock))
            print(
                f"  {replies:>10,} requests  RSS {samples[-1].rss_kb / 1024:7.1f} MiB", flush=True
            )

        level = run_level(loadgen, corpus_dir / "requests.txt", live, plan, on_progress)
        samples.append(_sample(live.pid, level.replies, clock))
    result = _result(args, samples, level)
    (out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = _markdown(result)
    (out / "memory.md").write_text(markdown)
    print("\n" + markdown)
    if args.publish:
        report.publish(DOC, "memory", markdown)
    return 0 if level.correct and level.requests >= args.requests else 1


def _sample(pid: int, replies: int, clock: float) -> Sample:
    memory = procstat.memory(pid)
    return Sample(replies, time.monotonic() - clock, memory.rss_kb, memory.hwm_kb)


def _result(args: argparse.Namespace, samples: list[Sample], level: Level) -> dict[str, Any]:
    at_start, first_loaded, last = samples[0], samples[min(1, len(samples) - 1)], samples[-1]
    return {
        "list_size": args.list_size,
        "requests": level.requests,
        "connections": args.connections,
        "rps": level.rps,
        "rss_at_start_kb": at_start.rss_kb,
        "rss_first_sample_under_load_kb": first_loaded.rss_kb,
        "rss_at_end_kb": last.rss_kb,
        "peak_rss_kb": max(s.hwm_kb for s in samples),
        "growth_under_load_kb": last.rss_kb - first_loaded.rss_kb,
        "checked": level.checked,
        "wrong": level.wrong,
        "malformed": level.malformed,
        "error": level.error,
        "samples": [asdict(s) for s in samples],
    }


def _markdown(result: dict[str, Any]) -> str:
    mib = {k: result[k] / 1024 for k in result if k.endswith("_kb") and k != "samples"}
    return (
        f"postgate, reference ruleset, lists of {result['list_size']:,} entries, "
        f"{result['requests']:,} requests at {result['connections']} connections "
        f"({result['rps']:,.0f} req/s):\n\n"
        "| RSS at start | RSS first sample under load | RSS at end | peak RSS | growth under load "
        "| answers checked / wrong |\n|---:|---:|---:|---:|---:|---|\n"
        f"| {mib['rss_at_start_kb']:.1f} MiB | {mib['rss_first_sample_under_load_kb']:.1f} MiB "
        f"| {mib['rss_at_end_kb']:.1f} MiB | {mib['peak_rss_kb']:.1f} MiB "
        f"| {mib['growth_under_load_kb']:+.1f} MiB "
        f"| {result['checked']:,} / {result['wrong'] + result['malformed']} |\n"
    )


if __name__ == "__main__":
    sys.exit(main())
