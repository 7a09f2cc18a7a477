"""Figures for large lists: load time and lookup cost at 100,000 entries.

    .venv/bin/python bench/lookups.py [--entries 100000]

Prints, for a network list and a domain list of N entries each (seeded, so
runs compare): the time to load and compile them from files, and the cost
of one lookup as a rule condition sees it (a fresh request each time, so
address parsing and domain folding are included), for hits and misses.
Then whole decisions of the reference ruleset, and the slowest search of
its two regexes over hostile 1 KB values. Times are CPU seconds of this
process (best of several runs). Not a test: it only prints.
"""

from __future__ import annotations

import argparse
import functools
import random
import string
import tempfile
import time
import timeit
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from postgate.config.problems import Problems
from postgate.rules import Ruleset, compile_ruleset
from postgate.rules.patterns import MAX_SUBJECT, compile_pattern
from postgate.wire.codec import PolicyRequest
from postgate.wire.policy_files import read_policy_file

if TYPE_CHECKING:
    from collections.abc import Callable

# CPU time of this process: on a shared 2-core machine wall time mostly
# measures the neighbours; the figures are what one request costs us.
CLOCK = time.process_time
ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "conf" / "examples" / "reference.toml"
CONFIG = """
[lists.nets]
type = "network"
file = "nets.txt"
[lists.doms]
type = "domain"
file = "doms.txt"
subdomains = true
[[rules]]
id = "NET"
client_address = { list = "nets" }
action = "REJECT"
[[rules]]
id = "DOM"
client_name = { list = "doms" }
action = "REJECT"
"""


def networks(rng: random.Random, count: int) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        if rng.random() < 0.1:
            out.append(f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/64")
            continue
        prefix = rng.choice((32, 32, 32, 32, 24, 24, 28, 20, 16, 12))
        value = rng.randrange(1 << 32) & ~((1 << (32 - prefix)) - 1)
        if value >> 24 in {192, 198, 203}:  # keep the documentation ranges free for misses
            continue
        dotted = ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))
        out.append(f"{dotted}/{prefix}")
    return out


def domains(rng: random.Random, count: int) -> list[str]:
    def label() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 12)))

    return [f"{label()}.{rng.choice(('com', 'net', 'org', 'test'))}" for _ in range(count)]


def load(directory: Path, config: str = CONFIG) -> tuple[Ruleset, float]:
    problems = Problems(str(directory / "bench.toml"))
    start = time.process_time()
    ruleset = compile_ruleset(tomllib.loads(config), directory, problems)
    elapsed = time.process_time() - start
    assert not problems.errors, problems.errors
    return ruleset, elapsed


def per_call(ruleset: Ruleset, attrs: dict[str, str], expect: str) -> tuple[float, float]:
    """Microseconds for the one list condition alone, and for a whole decide().

    The condition is timed through the rule's generated trace helper, which
    reads the value afresh each call, so parsing the address or folding the
    name is part of the figure, as on a real request.
    """
    request = PolicyRequest(attrs)
    assert ruleset.decide(request).rule == expect, (attrs, ruleset.decide(request).rule)
    rule = ruleset.nodes[0 if "client_address" in attrs else 1]
    test = ruleset.failing[rule.id]
    lookup = best_of(lambda: test(request.raw))
    decide = best_of(lambda: ruleset.decide(request))
    return lookup, decide


def best_of(call: Callable[[], object], number: int = 20000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5, timer=CLOCK)) / number * 1e6


def lookups(entries: int) -> None:
    rng = random.Random(4)
    nets, doms = networks(rng, entries), domains(rng, entries)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "nets.txt").write_text("\n".join(nets) + "\n")
        (directory / "doms.txt").write_text("\n".join(doms) + "\n")
        for kind, other in (("network", "doms"), ("domain", "nets")):
            alone = CONFIG.replace(f'file = "{other}.txt"', "items = []")
            seconds = min(load(directory, alone)[1] for _ in range(3))
            print(f"load + compile a {entries:,}-entry {kind} list from its file: {seconds:.3f} s")
        ruleset, seconds = load(directory)
    print(f"load + compile both: {seconds:.3f} s")
    listed = nets[7].split("/")[0]
    cases = [
        ("network hit, IPv4", {"client_address": listed}, "NET"),
        ("network hit, IPv4-mapped", {"client_address": "::ffff:" + listed}, "NET"),
        ("network miss, IPv4", {"client_address": "198.51.100.77"}, "DEFAULT"),
        ("network miss, IPv6", {"client_address": "2001:db9::1"}, "DEFAULT"),
        ("domain hit, 3 labels below an entry", {"client_name": "a.b.c." + doms[11]}, "DOM"),
        ("domain miss, 6 labels", {"client_name": "a.b.c.d.example.invalid"}, "DEFAULT"),
    ]
    print("per request (us): list condition alone | whole decide() of the two rules")
    for name, attrs, expect in cases:
        lookup, decide = per_call(ruleset, attrs, expect)
        print(f"  {name}: {lookup:.2f} | {decide:.2f}")


def reference() -> None:
    problems = Problems(str(REFERENCE))
    ruleset = compile_ruleset(tomllib.loads(REFERENCE.read_text()), REFERENCE.parent, problems)
    cases = read_policy_file(ROOT / "conf" / "examples" / "test_reference.policy")
    requests = [case.request for case in cases]
    best = min(timeit.repeat(lambda: [ruleset.decide(r) for r in requests], number=200, repeat=5))
    print(
        f"reference ruleset: {best / 200 / len(requests) * 1e6:.2f} us per decision "
        f"(mean over its {len(requests)} corpus requests)"
    )


def regex_worst() -> None:
    sources = (
        r"^\d+\.\d+\.\d+\.\d+$",
        r"(^|[.-])(dyn|dynamic|dsl|adsl|ppp|pool|dhcp|cable)[0-9]*[.-]",
    )
    hostile = [
        "1." * (MAX_SUBJECT // 2),
        "1" * MAX_SUBJECT,
        "-dyn" * (MAX_SUBJECT // 4),
        ".dsl0" * (MAX_SUBJECT // 5),
        "a" * MAX_SUBJECT,
        "\udcff" * MAX_SUBJECT,
    ]
    for source in sources:
        search = compile_pattern(source).search
        worst = max(best_of(functools.partial(search, value), 50) for value in hostile)
        print(f"regex /{source}/: slowest hostile {MAX_SUBJECT}-char value {worst:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description="rule engine lookup figures")
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    lookups(args.entries)
    reference()
    regex_worst()


if __name__ == "__main__":
    main()
