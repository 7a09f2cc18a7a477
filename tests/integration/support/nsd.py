"""A private NSD (Debian's ``nsd``) on a loopback port, serving zones the test writes.

NSD answers its zones authoritatively (A, TXT; NXDOMAIN with the SOA whose
minimum is the negative TTL, RFC 2308), SERVFAIL for a configured zone whose
file does not load, and REFUSED for any other zone: the three outcomes a DNS
list can give. `Silent` is a UDP port that takes queries and never answers.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from twisted.names import dns

from tests.integration.support.needs import need
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
SOA = "@ IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 {negative}\n@ IN NS ns.{zone}.\n"


def free_udp_port() -> int:
    """A loopback port free for both UDP and TCP (NSD binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free loopback port for UDP and TCP")


def query(
    port: int, name: str, kind: int = dns.A, timeout: float = 1.0, address: str = "127.0.0.1"
) -> dns.Message:
    """One blocking query over UDP: the test's own probe, not postgate's resolver."""
    message = dns.Message(id=4242, recDes=0)
    message.queries = [dns.Query(name, kind)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(message.toStr(), (address, port))
        answer = dns.Message()
        answer.fromStr(sock.recv(4096))
    return answer


@dataclass
class Nsd:
    """``zones``: zone -> its records (relative names); ``broken``: zones that fail to load."""

    directory: Path
    zones: Mapping[str, str]
    broken: tuple[str, ...] = ()
    negative_ttl: int = 2
    port: int = field(default_factory=free_udp_port)
    address: str = "127.0.0.1"  # any of 127/8: the benchmark serves port 53 on its own
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory
        lines = [
            "server:",
            f"    ip-address: {self.address}@{self.port}",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{d}"',
            f'    pidfile: "{d}/nsd.pid"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    zonelistfile: "{d}/zone.list"',
            f'    logfile: "{d}/nsd.log"',
            '    database: ""',
            "    server-count: 1",
            "    verbosity: 1",
            # Response rate limiting (200 answers a second by default) would
            # drop the tests' and the benchmark's queries from one address.
            "    rrl-ratelimit: 0",
            "    rrl-whitelist-ratelimit: 0",
            "remote-control:",
            "    control-enable: no",
        ]
        for zone, records in self.zones.items():
            head = SOA.format(zone=zone, negative=self.negative_ttl)
            (d / f"{zone}.zone").write_text(f"$ORIGIN {zone}.\n$TTL 60\n{head}{records}\n")
            lines += ["zone:", f"    name: {zone}", f"    zonefile: {zone}.zone"]
        for zone in self.broken:
            (d / f"{zone}.zone").write_text("this is no zone file\n")
            lines += ["zone:", f"    name: {zone}", f"    zonefile: {zone}.zone"]
        (d / "nsd.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> Self:
        if not shutil.which(NSD):
            need("nsd is not installed (apt install nsd)")
        self.write()
        log = (self.directory / "nsd.out").open("ab")
        self.proc = subprocess.Popen(
            [NSD, "-d", "-c", str(self.directory / "nsd.conf")], stdout=log, stderr=log
        )
        log.close()
        zone = next(iter(self.zones))
        wait_until(lambda: self._answers(zone), f"nsd answering on port {self.port}", 20)
        return self

    def _answers(self, zone: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"nsd exited: {(self.directory / 'nsd.out').read_text()}")
        try:
            return query(self.port, zone, dns.SOA, 0.2, self.address).rCode == dns.OK
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Silent:
    """A loopback UDP port that receives queries and answers none (a dropping server)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()
