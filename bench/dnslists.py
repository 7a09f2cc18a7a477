"""DNS lists under load: postgate with three lists beside the reference ruleset, and postfwd's rbl=.

One run, side by side, against one private NSD on loopback (the zones list
nobody in the corpus, so every answer is still checked against the oracle):

- warm: the reference ruleset, and the same with a first rule scoring three
  lists (client address, sender domain, allow list), after a warm-up long
  enough to fill the cache; the target is at least 80 % of the reference's
  requests/s;
- cold: every request a new client (the corpus with unique client
  addresses; replies checked for shape only), through a proxy that delays
  every DNS answer by a fixed time; p99 should stay within that delay plus
  ``dns.deadline``, and a delay beyond the deadline costs the deadline only;
- postfwd1 with the reference ruleset, then with ``rbl=``/``rhsbl_sender=``
  rules against the same NSD.

Run on a quiet machine: .venv/bin/python bench/dnslists.py [--quick]
Output: bench/out/dnslists.json and dnslists.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

BENCH: Final = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from driver import REFERENCE, build, ensure_corpus, postgate_config, print_level  # noqa: E402
from measure import Level, Plan, run_level  # noqa: E402
from servers import Endpoint, Postfwd, Postgate, free_port, running  # noqa: E402
from tests.integration.support.nsd import Nsd  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

ZONES: Final = {
    "zen.example": "2.0.0.127 IN A 127.0.0.2\n",
    "dbl.example": "dbltest.example IN A 127.0.1.2\n",
    "wl.example": "2.0.0.127 IN A 127.0.2.2\n",
}
DNS_RULE: Final = """[[rules]]
id = "DNSBL"
dnsbl_score = { ge = 3 }
reply = "dnsbl_listed"

"""
DNS_TABLE: Final = """
[dns]
servers = ["{server}"]
deadline = {deadline}
query_timeout = 3.0
cache_size = 200000
min_ttl = 3600  # warm stays warm for the whole run

[dns.lists.zen]
zone = "zen.example"
answers = ["127.0.0.[2..11]"]
weight = 3

[dns.lists.dbl]
zone = "dbl.example"
query = "sender_domain"
weight = 2

[dns.lists.wl]
zone = "wl.example"
weight = -4
"""
# postfwd separates items with ";", so its reply cannot carry Postfix's wording.
POSTFWD_DNS: Final = (
    "id=R00_ZEN; rbl=zen.example; action=554 5.7.1 Client host blocked using zen.example\n"
    "id=R00_DBL; rhsbl_sender=dbl.example; action=554 5.7.1 Sender blocked using dbl.example\n"
    "id=R00_WL; rbl=wl.example; action=DUNNO\n"
)
# Without --nodns, postfwd logs on its DNS path, and Sys::Syslog dies when no
# syslog daemon listens (none does on a bench machine): it logs to `SyslogSink`.
POSTFWD_OPTIONS: Final = ("--socktype", "udp")
DNS_ADDRESS: Final = "127.0.99.1"  # NSD on port 53 here, for postfwd's resolv.conf
DEADLINE: Final = 0.5


def dns_config(reference: Path, server: str, name: str) -> Path:
    """The reference config with a first rule scoring three DNS lists."""
    text = reference.read_text(encoding="utf-8")
    first = text.index("[[rules]]")
    table = DNS_TABLE.replace("{server}", server).replace("{deadline}", str(DEADLINE))
    path = reference.with_name(name)
    path.write_text(text[:first] + DNS_RULE + text[first:] + table, encoding="utf-8")
    return path


def cold_corpus(corpus: Path, out: Path) -> Path:
    """Every request from a client never seen before; expectations dropped (shape only)."""
    blocks = corpus.read_text(encoding="utf-8").split("\n\n")
    written = []
    for index, block in enumerate(blocks):
        lines = [ln for ln in block.splitlines() if not ln.startswith("# expect")]
        client = f"client_address=100.{64 + index // 65536}.{index // 256 % 256}.{index % 256}"
        written.append(
            "\n".join(client if ln.startswith("client_address=") else ln for ln in lines)
        )
    out.write_text("\n\n".join(written) + "\n", encoding="utf-8")
    return out


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: ARG002
        self.proxy.answered(data)


class DelayProxy(asyncio.DatagramProtocol):
    """A UDP DNS proxy that holds every query ``delay`` seconds before passing it on."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream_address, self.delay = upstream, delay
        self.port = 0
        self.waiting: dict[bytes, tuple[str, int]] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.listener: asyncio.DatagramTransport | None = None
        self.upstream: asyncio.DatagramTransport | None = None

    def __enter__(self) -> Self:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(10)
        return self

    async def _open(self) -> None:
        self.listener, _ = await self.loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.port = int(self.listener.get_extra_info("sockname")[1])
        self.upstream, _ = await self.loop.create_datagram_endpoint(
            lambda: _Upstream(self), remote_addr=self.upstream_address
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.waiting[data[:2]] = addr  # by query id: enough for a benchmark's traffic
        self.loop.call_later(self.delay, self._forward, data)

    def _forward(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.sendto(data)

    def answered(self, data: bytes) -> None:
        addr = self.waiting.pop(data[:2], None)
        if addr is not None and self.listener is not None:
            self.listener.sendto(data, addr)

    def __exit__(self, *_exc: object) -> None:
        for transport in (self.listener, self.upstream):
            if transport is not None:
                self.loop.call_soon_threadsafe(transport.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class SyslogSink:
    """A UDP socket on the syslog port that takes postfwd's log lines and drops them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 514))
        self.sock.settimeout(0.5)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(OSError):
                self.sock.recv(65536)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@dataclass(frozen=True, slots=True)
class PostfwdDns(Postfwd):
    """postfwd1 with DNS rules in front, resolving through the bench's NSD.

    postfwd runs in Perl's taint mode, which refuses resolver settings from
    the environment, and resolv.conf has no port: it runs in a private mount
    namespace whose /etc/resolv.conf names the NSD (on port 53 of its own
    loopback address).
    """

    def ruleset(self, workdir: Path) -> Path:
        path = Postfwd.ruleset(self, workdir)
        text = path.read_text(encoding="utf-8")
        first = re.search(r"^id=R01;", text, flags=re.MULTILINE)
        assert first is not None
        path.write_text(text[: first.start()] + POSTFWD_DNS + text[first.start() :], "utf-8")
        return path


def postfwd_dns(lists: Path, out: Path) -> PostfwdDns:
    resolv = out / "postfwd-resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\n", encoding="utf-8")
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    prefix = ("unshare", "--mount", "sh", "-c", script, "sh", str(resolv))
    return PostfwdDns("postfwd1", lists, "postfwd1-rbl", POSTFWD_OPTIONS, prefix)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    level: Level
    note: str = ""


def measured(
    server: Any,
    loadgen: Path,
    requests: Path,
    plans: list[Plan],
    out: Path,
    note: str = "",
    *,
    warm: bool = False,
) -> Iterator[Row]:
    """Each plan's level; ``warm``: after one pass of the whole corpus, unmeasured.

    A time-boxed warm-up may end before every client has been looked up once
    (a cold request waits for three lookups), and the measured window would
    then mix cold requests into a "warm" figure.
    """
    with running(server, Endpoint(port=free_port()), out) as live:
        if warm:
            size = requests.read_text(encoding="utf-8").count("\n\n") + 1
            run_level(loadgen, requests, live, Plan(10, 0.0, requests=size, once=True))
        for plan in plans:
            level = run_level(loadgen, requests, live, plan)
            print_level(level)
            yield Row(server.name, level, note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    parser.add_argument("--delays", default="0.05,2.0", help="DNS delays of the cold runs (s)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    loadgen, _ = build(out)
    corpus_dir = out / "corpus"
    ensure_corpus(corpus_dir, 1, 20000, 1000)
    reference = postgate_config(REFERENCE, corpus_dir)
    requests = corpus_dir / "requests.txt"
    duration = 4.0 if args.quick else 10.0
    rows: list[Row] = []
    with Nsd(out / "nsd", ZONES, port=53, address=DNS_ADDRESS) as nsd:
        dns = dns_config(reference, f"{DNS_ADDRESS}:53", "postgate-dns.toml")
        warm = [Plan(connections=n, warmup=8.0, duration=duration) for n in (10, 50)]
        rows += measured(Postgate(reference), loadgen, requests, warm, out, warm=True)
        dns_server = Postgate(dns, name="postgate-dns")
        rows += measured(dns_server, loadgen, requests, warm, out, warm=True)
        cold = cold_corpus(requests, corpus_dir / "requests-cold.txt")
        for delay in (float(d) for d in args.delays.split(",")):
            with DelayProxy((DNS_ADDRESS, nsd.port), delay) as proxy:
                server = f"127.0.0.1:{proxy.port}"
                config = dns_config(reference, server, f"postgate-dns-cold-{delay:g}.toml")
                plan = Plan(connections=10, warmup=2.0, duration=duration, check=False)
                cold_server = Postgate(config, name=f"postgate-dns-cold-{delay:g}s")
                rows += measured(cold_server, loadgen, cold, [plan], out, f"DNS delay {delay:g} s")
        slow = [Plan(connections=10, warmup=3.0, duration=duration, timeout=120.0)]
        lists = corpus_dir / "lists"
        rows += measured(Postfwd("postfwd1", lists, "postfwd1"), loadgen, requests, slow, out)
        postfwd_rbl = postfwd_dns(lists, out)
        with SyslogSink():
            rows += measured(postfwd_rbl, loadgen, requests, slow, out)
    write(rows, out)
    return 0


def write(rows: list[Row], out: Path) -> None:
    (out / "dnslists.json").write_text(
        json.dumps([{"name": r.name, "note": r.note, **asdict(r.level)} for r in rows], indent=2)
    )
    lines = [
        (
            "| server | conns | req/s | p50 ms | p99 ms | max ms | CPU µs/req "
            "| answers checked / wrong | note |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lv, lat = row.level, row.level.latency_us
        checked = f"{lv.checked:,} / {lv.wrong}" if lv.checked else "shape only"
        lines.append(
            f"| {row.name} | {lv.connections} | {lv.rps:,.0f} | {lat.get('p50', 0) / 1000:.2f} "
            f"| {lat.get('p99', 0) / 1000:.2f} | {lat.get('max', 0) / 1000:.2f} "
            f"| {lv.cpu_us_per_request:.1f} | {checked} | {row.note} |"
        )
    ratio = _ratio(rows)
    if ratio:
        lines.append(f"\npostgate-dns / postgate at 50 connections: {ratio:.1%}")
    (out / "dnslists.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def _ratio(rows: list[Row]) -> float:
    by = {(r.name, r.level.connections): r.level.rps for r in rows}
    base, dns = by.get(("postgate", 50)), by.get(("postgate-dns", 50))
    return dns / base if base and dns else 0.0


if __name__ == "__main__":
    sys.exit(main())
