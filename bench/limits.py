"""Rate limits: postgate and policyd-rate-limit side by side on policyd-rate-limit's workload.

policyd-rate-limit's defaults: 10 recipients per minute and 150 per day per
SASL user, counted at DATA (its ``count_mode: 1``), SQLite backend. The
corpus: USERS users, each sending 12 one-recipient messages (a DATA request,
then END-OF-MESSAGE for those accepted): the first 10 pass, the 11th and 12th
are deferred at DATA. The load generator sends every request once
(``--once``); connection i takes the i-th contiguous slice, which holds
whole users, so every expected answer is exact whatever the concurrency.
Each server starts fresh (empty state) for each level. Run under the
shared lock, after installing policyd-rate-limit into bench/out/prl-venv::

    python3 -m venv bench/out/prl-venv && bench/out/prl-venv/bin/pip install policyd-rate-limit
    .venv/bin/python bench/limits.py --levels 1,10,50

Writes bench/out/limits.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

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

if TYPE_CHECKING:
    from collections.abc import Iterator

OUT: Final = BENCH / "out"
PRL: Final = OUT / "prl-venv" / "bin" / "policyd-rate-limit"
DEFER: Final = "450 4.7.1 Rate limit reached, retry later"
MESSAGES: Final = 12  # per user; 10 pass
PASSING: Final = 10

POSTGATE_TOML: Final = """
[state]
directory = "{state}"
{redis}
[[rules]]
id = "SASL_RATE"
sasl_username = {{ present = true }}
limit = {{ key = ["sasl_username"], count = "recipients", windows = ["10/minute", "150/day"] }}
action = "{defer}"
"""

PRL_YAML: Final = """
debug: False
user: "root"
group: "root"
pidfile: "{work}/prl.pid"
backend: 0
sqlite_config:
    database: "{work}/prl.sqlite3"
SOCKET: ["127.0.0.1", {port}]
socket_permission: 0666
limits:
    - [10, 60]
    - [150, 86400]
limits_by_id: {{}}
sql_limits_by_id: ""
limit_by_sasl: True
limit_by_sender: False
limit_by_ip: False
limited_networks: []
success_action: "DUNNO"
fail_action: "{defer}"
db_error_action: "DUNNO"
report: False
delay_to_close: 300
count_mode: 1
"""


def request(user: int, message: int, state: str) -> str:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": f"198.51.100.{user % 250 + 1}",
        "client_port": str(20000 + user % 40000),
        "helo_name": "client.example",
        "sender": f"user{user}@example.org",
        "recipient": f"rcpt{message}@example.com",
        "recipient_count": "1",
        "instance": f"{user:x}.6b0b7c2f.1bba5.{message}",
        "size": "2048",
        "sasl_method": "PLAIN",
        "sasl_username": f"user{user}",
    }
    return "".join(f"{k}={v}\n" for k, v in attrs.items())


def corpus(users: int, path: Path) -> int:
    blocks = []
    for user in range(users):
        for message in range(MESSAGES):
            passes = message < PASSING
            blocks.append(
                f"# expect: {'DUNNO' if passes else DEFER}\n{request(user, message, 'DATA')}"
            )
            if passes:
                blocks.append(f"# expect: DUNNO\n{request(user, message, 'END-OF-MESSAGE')}")
    path.write_text("\n".join(blocks))
    return len(blocks)


@dataclass(frozen=True, slots=True)
class PolicydRateLimit:
    work: Path
    name: str = "policyd-rate-limit"

    def available(self) -> str | None:
        return None if PRL.exists() else f"{PRL} is not installed (see this file's docstring)"

    def start(self, endpoint: Endpoint, workdir: Path) -> Running:
        config = self.work / "prl.yaml"
        config.write_text(PRL_YAML.format(work=self.work, port=endpoint.port, defer=DEFER))
        return _spawn(self.name, [str(PRL), "--file", str(config)], endpoint, workdir)


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[int]:
    """A redis-server of its own on a loopback port, for ``postgate-redis``; always stopped."""
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(directory)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stop = time.monotonic() + 10
        while not Endpoint(port=port).connectable():
            if time.monotonic() > stop:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _level(
    name: str, config: Path, level_dir: Path, args: argparse.Namespace, run: tuple[Any, ...]
) -> Level | None:
    loadgen, work, requests, connections = run
    server = (
        PolicydRateLimit(level_dir)
        if name == "policyd-rate-limit"
        else Postgate(config, venv=args.venv, name=name)
    )
    why = server.available()
    if why:
        print(f"{name}: {why}", file=sys.stderr)
        return None
    plan = Plan(connections, warmup=0.0, requests=requests, timeout=60.0, once=True)
    with running(server, Endpoint(port=free_port()), level_dir) as live:
        return run_level(loadgen, work / "corpus.policy", live, plan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="a multiple of every level")
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--servers", default="postgate,postgate-redis,policyd-rate-limit")
    parser.add_argument("--venv", type=Path, default=BENCH.parent / ".venv")
    args = parser.parse_args()
    stop_on_signals()
    loadgen = OUT / "bin" / "loadgen"
    ensure_built(BENCH / "loadgen.c", loadgen, threads=True)
    work = fresh(OUT / "limits")
    requests = corpus(args.users, work / "corpus.policy")
    results = []
    for connections in (int(n) for n in args.levels.split(",")):
        for name in args.servers.split(","):
            level_dir = fresh(work / f"{name}-{connections}")
            with contextlib.ExitStack() as stack:
                redis = ""
                if name == "postgate-redis":
                    port = stack.enter_context(private_redis(level_dir))
                    redis = f'backend = "redis"\n[state.redis]\nport = {port}\n'
                config = level_dir / "postgate.toml"
                text = POSTGATE_TOML.format(state=level_dir / "state", defer=DEFER, redis=redis)
                config.write_text(text)
                level = _level(
                    name, config, level_dir, args, (loadgen, work, requests, connections)
                )
            if level is None:
                return 1
            results.append(asdict(level))
            print(summary(name, connections, level), flush=True)
    (OUT / "limits.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["wrong"] == 0 and r["error"] is None for r in results) else 3


if __name__ == "__main__":
    raise SystemExit(main())
