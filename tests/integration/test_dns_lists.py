"""DNS lists against a real DNS server: NSD on a loopback port with zones written here.

The daemon asks NSD through ``twisted.names``; every answer below is what a
real server sent: listings with TXT, NXDOMAIN with its SOA, SERVFAIL from a
zone that did not load, REFUSED from a zone NSD does not serve, silence from a
port that drops queries, and nothing at all from a server that was stopped.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port
from tests.integration.support.nsd import Nsd, Silent
from tests.support.dns_lists import LISTS as SHARED_LISTS

if TYPE_CHECKING:
    from pathlib import Path

V6 = "b.a.9.8.7.6.5.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
ZONES = {
    "zen.example": (
        "2.0.0.127 2 IN A 127.0.0.2\n"
        '2.0.0.127 2 IN TXT "https://zen.example/query/127.0.0.2"\n'
        "10.2.0.192 IN A 127.0.0.10\n"
        "11.2.0.192 IN A 127.0.0.11\n"
        "11.2.0.192 IN A 127.0.0.4\n"
        f"{V6} IN A 127.0.0.3\n"
        "13.2.0.192 IN A 127.255.255.254\n"
    ),
    "wl.example": "11.2.0.192 IN A 127.0.2.3\n",
    "dbl.example": 'bad.example IN A 127.0.1.2\nbad.example IN TXT "spam domain"\n',
}
LISTS = (
    SHARED_LISTS
    + """
[dns.lists.broken]
zone = "broken.example"

[dns.lists.refusing]
zone = "elsewhere.example"

[[rules]]
id = "SCORE"
dnsbl_score = { ge = 3, lists = ["zen", "pbl", "dbl", "helo", "wl"] }
reply = "dnsbl_listed"

[[rules]]
id = "SOME"
dnsbl_score = { ge = 1, lists = ["zen", "pbl", "dbl", "helo", "wl"] }
action = "450 4.7.1 score {dnsbl_score}"

[[rules]]
id = "FAILED"
client_address = ["192.0.2.50", "192.0.2.51"]
dnsbl = { failed = ["broken", "refusing"] }
reply = "dnsbl_lookup_failed"
"""
)
LISTED = (
    b"action=554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
    b"zen.example; https://zen.example/query/127.0.0.2\n\n"
)
DUNNO = b"action=DUNNO\n\n"


def config(tmp_path: Path, dns_port: int, port: int, **dns: object) -> Path:
    settings = {
        "deadline": 0.5,
        "query_timeout": 1.0,
        "min_ttl": 1,
        "max_ttl": 60,
        "breaker_failures": 3,
        "breaker_seconds": 2,
    } | dns
    lines = [
        "[daemon]",
        f'listen = ["tcp:{port}:interface=127.0.0.1"]',
        "deadline = 1.0",
        'log_format = "json"',
        "[dns]",
        f'servers = ["127.0.0.1:{dns_port}"]',
        *(f"{key} = {value}" for key, value in settings.items()),
    ]
    path = tmp_path / "postgate.toml"
    path.write_text("\n".join(lines) + "\n" + LISTS)
    return path


def request(
    client: str, sender: str = "a@ok.example", helo: str = "mx.ok.example"
) -> dict[str, str]:
    return {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": client,
        "client_name": "unknown",
        "helo_name": helo,
        "sender": sender,
        "recipient": "b@ok.example",
    }


class Client:
    def __init__(self, port: int) -> None:
        self.sock = connect(("127.0.0.1", port), socket.AF_INET)

    def timed(self, attrs: dict[str, str]) -> tuple[bytes, float]:
        started = time.monotonic()
        reply = ask(self.sock, attrs)
        return reply, time.monotonic() - started

    def __call__(self, attrs: dict[str, str]) -> bytes:
        return self.timed(attrs)[0]


def test_listings_weights_rhsbl_ipv6_and_failures(tmp_path: Path) -> None:
    port = free_port()
    nsd = Nsd(tmp_path / "nsd", ZONES, broken=("broken.example",))
    with nsd, Daemon(config(tmp_path, nsd.port, port)) as daemon:
        answer = Client(port)
        assert LISTED == answer(request("127.0.0.2"))
        assert DUNNO == answer(request("192.0.2.99"))
        assert b"blocked using zen.example\n\n" in answer(request(V6_CLIENT))
        assert DUNNO == answer(request("2001:db8::1"))
        # zen 3 + pbl 1; with the allow list's -4 as well, 0
        assert b"Client host [192.0.2.10] blocked using zen.example\n\n" in answer(
            request("192.0.2.10")
        )
        assert DUNNO == answer(request("192.0.2.11"))
        # RHSBL: sender domain 2 + HELO 1 reaches 3; HELO alone is 1
        assert (
            b"action=554 5.7.1 Service unavailable; Sender address [bad.example] blocked "
            b"using dbl.example; spam domain\n\n"
        ) == answer(request("192.0.2.99", "x@bad.example", "bad.example"))
        assert b"action=450 4.7.1 score 1\n\n" == answer(request("192.0.2.98", helo="bad.example"))
        # an operator's refusal code is no listing
        assert DUNNO == answer(request("192.0.2.13"))
        # SERVFAIL (a zone that did not load) and REFUSED (a zone NSD does not serve)
        failed = b"action=DEFER_IF_PERMIT 4.7.1 DNSBL lookup failed, try again later\n\n"
        assert (failed, failed) == (answer(request("192.0.2.50")), answer(request("192.0.2.51")))
    log = daemon.log()
    assert ('"zone":"broken.example"' in log, '"zone":"elsewhere.example"' in log) == (True, True)


V6_CLIENT = "2001:db8::4567:89ab"


def test_ttl_expiry_and_negative_caching(tmp_path: Path) -> None:
    port = free_port()
    nsd = Nsd(tmp_path / "nsd", ZONES, negative_ttl=2)
    with nsd, Daemon(config(tmp_path, nsd.port, port)) as daemon:
        answer = Client(port)
        assert LISTED == answer(request("127.0.0.2"))  # TTL 2
        assert DUNNO == answer(request("192.0.2.99"))  # NXDOMAIN, SOA minimum 2
        nsd.stop()
        listed, took = answer.timed(request("127.0.0.2"))
        unlisted, took_nx = answer.timed(request("192.0.2.99"))
        assert (LISTED, DUNNO) == (listed, unlisted)
        assert max(took, took_nx) < 0.2  # from the cache, not the stopped server
        time.sleep(2.2)
        expired, took = answer.timed(request("127.0.0.2"))
        assert DUNNO == expired  # the cached listing ran out; the lookup failed
        assert 0.4 < took < 1.0  # dns.deadline, within daemon.deadline
    failing = [line for line in daemon.log().splitlines() if '"dns_list_failing"' in line]
    zones = sorted(line.split('"zone":"')[1].split('"')[0] for line in failing)
    assert ["dbl.example", "wl.example", "zen.example"] == zones  # once per outage each


def test_a_server_that_drops_queries_costs_the_deadline_only(tmp_path: Path) -> None:
    port = free_port()
    with Silent() as silent, Daemon(config(tmp_path, silent.port, port)):
        answer = Client(port)
        replies = [answer.timed(request(f"192.0.2.{n}")) for n in (1, 2)]
        assert [DUNNO, DUNNO] == [reply for reply, _ in replies]
        assert all(0.4 < took < 1.0 for _, took in replies), replies


def test_a_server_that_is_down_opens_the_breaker_which_closes_by_itself(tmp_path: Path) -> None:
    port = free_port()
    nsd = Nsd(tmp_path / "nsd", ZONES)
    with nsd, Daemon(config(tmp_path, nsd.port, port)) as daemon:
        answer = Client(port)
        nsd.stop()
        for n in range(3):
            assert DUNNO == answer(request(f"192.0.2.{20 + n}"))
        daemon.wait_for_log('"event":"dns_breaker_open"', timeout=5)
        skipped, took = answer.timed(request("127.0.0.2"))
        assert (DUNNO, True) == (skipped, took < 0.2)  # skipped at once while open
        nsd.start()
        time.sleep(2.1)  # breaker_seconds
        assert LISTED == answer(request("127.0.0.2"))  # the probe goes out and answers
        daemon.wait_for_log('"event":"dns_list_recovered"', timeout=5)
        assert LISTED == answer(request("127.0.0.2"))
    opened = [line for line in daemon.log().splitlines() if '"dns_breaker_open"' in line]
    assert len(opened) == len({line.split('"zone":"')[1] for line in opened})  # once per zone
