"""Write N-entry versions of the five reference lists, deterministically.

    python bench/lists.py DIRECTORY N [--seed S]

The shipped entries of conf/examples/lists/ come first, so the reference
corpus keeps its answers; the rest are fillers drawn from a seeded RNG in
ranges and names that no corpus request uses (public IPv4 11.0.0.0 to
99.255.255.255 without 10/8, random 10-letter labels under .test/.invalid,
random SHA-256 fingerprints). Same seed and N, byte-identical files.
"""

from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "conf" / "examples" / "lists"
FILES = (
    "local-domains.txt",
    "sender-blocklist.txt",
    "client-blocklist.txt",
    "spamtraps.txt",
    "trusted-certs.txt",
)


def shipped_entries(name: str) -> list[str]:
    """The entries of a shipped list, without comments."""
    entries = []
    for line in (SHIPPED / name).read_text().splitlines():
        entry = line.split(" #")[0].split("\t#")[0].strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    return entries


def label(rng: random.Random, size: int = 10) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(size))


def domain(rng: random.Random) -> str:
    return f"{label(rng)}.{rng.choice(('test', 'invalid'))}"


def network(rng: random.Random) -> str:
    prefix = rng.choice((32, 32, 32, 24, 24, 28, 20, 16))
    value = rng.randrange(11 << 24, 100 << 24) & ~((1 << (32 - prefix)) - 1)
    octets = ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))
    return octets if prefix == 32 else f"{octets}/{prefix}"


def fingerprint(rng: random.Random) -> str:
    return ":".join(f"{rng.randrange(256):02X}" for _ in range(32))


def fillers(name: str, rng: random.Random) -> str:
    if name in {"local-domains.txt", "sender-blocklist.txt"}:
        return domain(rng)
    if name == "client-blocklist.txt":
        return network(rng)
    if name == "spamtraps.txt":
        return f"{label(rng, 8)}@{domain(rng)}"
    return fingerprint(rng)


def entries(name: str, size: int, seed: int) -> list[str]:
    """``size`` entries for list file ``name``: shipped ones, then unique fillers."""
    rng = random.Random(f"{seed}:{name}")
    found = shipped_entries(name)[:size]
    seen = set(found)
    while len(found) < size:
        entry = fillers(name, rng)
        if entry not in seen:
            seen.add(entry)
            found.append(entry)
    return found


def write_lists(directory: Path, size: int, seed: int = 1) -> dict[str, Path]:
    """Write the five lists with ``size`` entries each into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in FILES:
        path = directory / name
        path.write_text("\n".join(entries(name, size, seed)) + "\n")
        written[name] = path
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("size", type=int)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for name, path in write_lists(args.directory, args.size, args.seed).items():
        print(f"{name}: {args.size} entries -> {path}")


if __name__ == "__main__":
    main()
