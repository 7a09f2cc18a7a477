"""Greylisting: postgate and postgrey side by side, greylisting every request.

Both with postgrey's defaults (300 s delay, its default whitelist files,
which postgate reads as lists) and the same reply text, so the load
generator checks every answer of both against one expectation. The corpus:
TRIPLETS distinct triplets (client /24, sender, recipient), each tried three
times (its first sight, then two early retries, all deferred within the
run), and every tenth request for postmaster@, which postgrey's default
recipient whitelist lets through. Requests come in chunks of 20 triplets,
each chunk in three rounds, so every connection's slice (``--once``: the
i-th contiguous slice) holds whole triplets at every level. Each server
starts fresh (empty state) for each level; postgate keeps its state file
(written behind), postgrey its BerkeleyDB. ``postgate-stateless`` gives the
same answers from a rule without state (``client_name = "unknown"``): the
daemon's own cost on this corpus. Run under the shared lock::

    .venv/bin/python bench/greylist.py --levels 1,10,50

Writes bench/out/greylist.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pwd
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from measure import Level, Plan, fresh, run_level, summary
from servers import (
    BENCH,
    Endpoint,
    Postgate,
    Running,
    _spawn,
    ensure_built,
    free_port,
    running,
    stop_on_signals,
)

OUT: Final = BENCH / "out"
POSTGREY: Final = Path("/usr/sbin/postgrey")
CHUNK: Final = 20  # triplets per chunk; a chunk is 3 rounds of them plus postmaster mail
DEFER: Final = "DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"

POSTGATE_TOML: Final = """
[state]
directory = "{state}"

[lists.postgrey_clients]
type = "postgrey_clients"
file = "/etc/postgrey/whitelist_clients"

[lists.postgrey_recipients]
type = "postgrey_recipients"
file = "/etc/postgrey/whitelist_recipients"

[[rules]]
id = "POSTGREY_CLIENTS"
client_name = {{ list = "postgrey_clients" }}
action = "DUNNO"

[[rules]]
id = "POSTGREY_RECIPIENTS"
recipient = {{ list = "postgrey_recipients" }}
action = "DUNNO"

[[rules]]
id = "GREYLIST"
{selector}
action = "DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/{{recipient_domain}}.html"
"""
# The same answers without state: what the daemon costs on this corpus
# before greylisting adds its lookups and writes.
SELECTORS: Final = {"postgate": "greylist = true", "postgate-stateless": 'client_name = "unknown"'}


def request(triplet: int, recipient: str) -> str:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": f"10.{triplet // 65536 % 256}.{triplet // 256 % 256}.{triplet % 256}",
        "client_name": "unknown",
        "reverse_client_name": "unknown",
        "helo_name": f"host{triplet}.dyn.example.net",
        "sender": f"bounce-{triplet}-{triplet % 97}@lists{triplet % 13}.example.org",
        "recipient": recipient,
        "recipient_count": "0",
        "size": "4096",
    }
    return "".join(f"{k}={v}\n" for k, v in attrs.items())


def corpus(triplets: int, path: Path) -> int:
    blocks: list[str] = []
    for start in range(0, triplets, CHUNK):
        chunk = range(start, min(start + CHUNK, triplets))
        for _ in range(3):
            blocks.extend(
                f"# expect: {DEFER}\n{request(t, f'user{t % 500}@example.com')}" for t in chunk
            )
            blocks.append(f"# expect: DUNNO\n{request(start, 'postmaster@example.com')}")
            blocks.append(f"# expect: DUNNO\n{request(start + 1, 'postmaster@example.com')}")
    path.write_text("\n".join(blocks))
    return len(blocks)


@dataclass(frozen=True, slots=True)
class Postgrey:
    """Debian's postgrey on a loopback port, as its own user, with a private dbdir."""

    db: Path
    name: str = "postgrey"

    def available(self) -> str | None:
        if not POSTGREY.exists():
            return "postgrey is not installed (apt-get install postgrey)"
        try:
            pwd.getpwnam("postgrey")
        except KeyError:
            return "the postgrey user is missing"
        return None

    def start(self, endpoint: Endpoint, workdir: Path) -> Running:
        argv = [
            str(POSTGREY),
            f"--inet=127.0.0.1:{endpoint.port}",
            f"--dbdir={self.db}",
            "--delay=300",
            f"--pidfile={self.db}/postgrey.pid",
        ]
        return _spawn(self.name, argv, endpoint, workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triplets", type=int, default=20000, help="a multiple of 20 x levels")
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--servers", default="postgrey,postgate,postgate-stateless")
    parser.add_argument("--venv", type=Path, default=BENCH.parent / ".venv")
    args = parser.parse_args()
    stop_on_signals()
    loadgen = OUT / "bin" / "loadgen"
    ensure_built(BENCH / "loadgen.c", loadgen, threads=True)
    work = fresh(OUT / "greylist")
    requests = corpus(args.triplets, work / "corpus.policy")
    results = []
    for connections in (int(n) for n in args.levels.split(",")):
        for name in args.servers.split(","):
            level_dir = fresh(work / f"{name}-{connections}")
            measured = level(name, connections, requests, level_dir, args, loadgen)
            results.append(asdict(measured))
            print(summary(name, connections, measured), flush=True)
    (OUT / "greylist.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["wrong"] == 0 and r["error"] is None for r in results) else 3


def level(
    name: str,
    connections: int,
    requests: int,
    level_dir: Path,
    args: argparse.Namespace,
    loadgen: Path,
) -> Level:
    config = level_dir / "postgate.toml"
    selector = SELECTORS.get(name, "")
    config.write_text(POSTGATE_TOML.format(state=level_dir / "state", selector=selector))
    db = Path(tempfile.mkdtemp(prefix="bench-postgrey-"))  # postgrey's user must reach it
    shutil.chown(db, "postgrey", "postgrey")
    server = Postgate(config, name, venv=args.venv) if name in SELECTORS else Postgrey(db)
    why = server.available()
    if why:
        print(f"{name}: {why}", file=sys.stderr)
        raise SystemExit(1)
    plan = Plan(connections, warmup=0.0, requests=requests, timeout=60.0, once=True)
    try:
        with running(server, Endpoint(port=free_port()), level_dir) as live:
            return run_level(loadgen, level_dir.parent / "corpus.policy", live, plan)
    finally:
        shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
