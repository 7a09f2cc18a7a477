"""Check the oracle against postfwd on every request of the corpus, once.

`reference.py` computes the expected answers; postfwd runs the same
ruleset written in its own language (`postfwd.cf`) on the same list files.
Two implementations written apart agreeing on all 20,000 requests is the
evidence that the expectations are right. The load generator's --once
mode sends every request of the corpus exactly once (each connection its own
slice). postfwd2 is used because it spreads over both cores; at about 20
requests/s the whole corpus takes some 20 minutes.

Run: .venv/bin/python bench/crosscheck.py [--variant postfwd2] [--publish]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
from driver import BENCH, DOC, build, ensure_corpus
from measure import Level, Plan, run_level
from servers import Endpoint, Postfwd, free_port, running, stop_on_signals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("postfwd1", "postfwd2"), default="postfwd2")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    parser.add_argument("--publish", action="store_true", help="update docs/performance.md")
    args = parser.parse_args(argv)
    stop_on_signals()
    out = args.out.resolve()
    loadgen, _ = build(out)
    corpus_dir = out / "corpus"
    size = int(ensure_corpus(corpus_dir, seed=1, requests=20000, list_size=1000)["requests"])
    server = Postfwd(variant=args.variant, lists=corpus_dir / "lists", name=args.variant)
    plan = Plan(args.connections, 0.0, requests=size, timeout=120.0, progress=60, once=True)
    with running(server, Endpoint(port=free_port()), out / "crosscheck") as live:
        level = run_level(loadgen, corpus_dir / "requests.txt", live, plan, _progress)
    markdown = _markdown(args.variant, level)
    print(markdown)
    if args.publish:
        report.publish(DOC, "crosscheck", markdown)
    return 0 if level.correct and level.checked == size else 1


def _markdown(variant: str, level: Level) -> str:
    lines = [
        f"{variant} over the corpus ({level.requests:,} requests, each sent once, "
        f"{level.connections} connections): {level.checked:,} answers compared with the "
        f"oracle's, {level.wrong} different, {level.malformed} malformed"
        + (f", error: {level.error}" if level.error else "")
        + ".\n"
    ]
    lines += [
        f"- request {m['index']}: expected `{m['expected']}`, postfwd said `{m['got']}`\n"
        for m in level.mismatches
    ]
    return "".join(lines)


def _progress(replies: int) -> None:
    print(f"  {replies} answers so far", flush=True)


if __name__ == "__main__":
    sys.exit(main())
