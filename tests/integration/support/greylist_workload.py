"""A generated greylisting workload: delivery attempts over three days, in time order.

Each attempt is a RCPT-stage policy request with its own time, tagged with
the kind of sender that made it, so that a difference between two
greylisting servers can be explained by kind:

* ``plain``: an MTA with a name, retrying after 1 to 30 minutes, sometimes
  too early; it sends again to the same people days later;
* ``verp`` and ``batv``: list bounces (``bounce-<n>-<m>@``) and BATV-signed
  senders (``prvs=<tag>=user@``), a new tag each message;
* ``ipv6``: an MTA retrying from another address of its /64;
* ``pool``: a provider whose retries come from addresses in other networks,
  all named under its own domain (the case pool awareness is for);
* ``bot``: an unnamed client trying once or twice within a minute;
* ``listed``: a client or a recipient in postgrey's default whitelists;
* ``busy``: one client address sending a new message every hour, which ends
  on the auto-allowlist.

Deterministic for a seed; no sockets, no clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

T0: Final = 1_760_000_000.0
DAY: Final = 86400.0
RECIPIENTS: Final = tuple(f"user{n}@example.com" for n in range(12))


@dataclass(frozen=True, slots=True)
class Attempt:
    time: float
    kind: str
    attrs: dict[str, str]


def _attrs(client: str, name: str, sender: str, recipient: str) -> dict[str, str]:
    return {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": client,
        "client_name": name,
        "reverse_client_name": name,
        "helo_name": name if name != "unknown" else "localhost",
        "sender": sender,
        "recipient": recipient,
        "recipient_count": "0",
    }


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.out: list[Attempt] = []

    def retries(self, start: float, early: bool) -> list[float]:
        """When one message is tried: first, maybe too early, then after the delay."""
        rng = self.rng
        times = [start]
        if early:
            times.append(start + rng.uniform(30, 240))
        times.append(times[-1] + rng.uniform(320, 1800))
        if rng.random() < 0.3:
            times.append(times[-1] + rng.uniform(600, 3600))
        return times

    def message(self, kind: str, start: float, clients: list[tuple[str, str]], sender: str) -> None:
        """One message to one recipient, each attempt from the next of ``clients``."""
        recipient = self.rng.choice(RECIPIENTS)
        for index, when in enumerate(self.retries(start, self.rng.random() < 0.4)):
            address, name = clients[index % len(clients)]
            self.out.append(Attempt(when, kind, _attrs(address, name, sender, recipient)))

    def plain(self, n: int) -> None:
        rng = self.rng
        domain = f"mta{n}.example"  # a registered domain of its own
        net = f"10.{n // 200}.{n % 200}"
        host = (f"{net}.{rng.randrange(2, 250)}", f"mail.{domain}")
        sender = f"{rng.choice(('alice', 'bob', 'news'))}@{domain}"
        start = T0 + rng.uniform(0, DAY)
        self.message("plain", start, [host], sender)
        self.message("plain", start + rng.uniform(DAY, 2 * DAY), [host], sender)

    def tagged(self, n: int) -> None:
        rng = self.rng
        domain = f"lists{n}.example.net"
        host = (f"172.16.{n % 250}.{rng.randrange(2, 250)}", f"out.{domain}")
        for m in range(3):
            if n % 2:
                kind, sender = "verp", f"bounce-{rng.randrange(10**6)}-{m}@{domain}"
            else:
                tag = f"{rng.randrange(10**4):04d}{rng.getrandbits(24):06x}"
                kind, sender = "batv", f"prvs={tag}=news@{domain}"
            self.message(kind, T0 + rng.uniform(0, 2 * DAY), [host], sender)

    def ipv6(self, n: int) -> None:
        rng = self.rng
        hosts = [
            (f"2001:db8:{n:x}:1::{rng.randrange(1, 9999):x}", f"mx{n}.v6.example") for _ in range(3)
        ]
        self.message("ipv6", T0 + rng.uniform(0, 2 * DAY), hosts, f"info@v6-{n}.example")

    def pool(self, n: int) -> None:
        rng = self.rng
        hosts = [
            (f"40.{92 + rng.randrange(8)}.{rng.randrange(256)}.{rng.randrange(2, 250)}",
             f"mail-{rng.getrandbits(32):x}.outbound.protection.outlook.com")
            for _ in range(4)
        ]  # fmt: skip
        self.message("pool", T0 + rng.uniform(0, 2 * DAY), hosts, f"person{n}@outlook.com")

    def bot(self, n: int) -> None:
        rng = self.rng
        address = f"198.18.{n % 256}.{rng.randrange(2, 250)}"
        sender = f"{rng.getrandbits(40):x}@spam{n % 7}.example"
        recipient = rng.choice(RECIPIENTS)
        start = T0 + rng.uniform(0, 2 * DAY)
        for when in (start, start + rng.uniform(5, 60))[: rng.randrange(1, 3)]:
            self.out.append(Attempt(when, "bot", _attrs(address, "unknown", sender, recipient)))

    def listed(self, n: int) -> None:
        rng = self.rng
        start = T0 + rng.uniform(0, 2 * DAY)
        if n % 2:
            attrs = _attrs("192.0.2.77", f"lists{n}.debian.org", f"x{n}@debian.org", RECIPIENTS[0])
        else:
            attrs = _attrs(
                f"198.51.100.{n}", "unknown", f"y{n}@example.info", "postmaster@example.com"
            )
        self.out.append(Attempt(start, "listed", attrs))

    def busy(self, n: int) -> None:
        rng = self.rng
        host = (f"192.0.{2 + n}.{rng.randrange(2, 250)}", f"relay{n}.busy.example")
        for hour in range(9):
            sender = f"sender{hour}@busy{n}.example"
            self.message("busy", T0 + hour * 3600 + rng.uniform(0, 600), [host], sender)


def workload(seed: int = 18, scale: int = 1) -> list[Attempt]:
    """Every attempt, in time order (ties keep generation order)."""
    build = _Builder(seed)
    for n in range(120 * scale):
        build.plain(n)
    for n in range(30 * scale):
        build.tagged(n)
        build.ipv6(n)
        build.pool(n)
        build.listed(n)
    for n in range(200 * scale):
        build.bot(n)
    for n in range(3):
        build.busy(n)
    return sorted(build.out, key=lambda a: a.time)


__all__ = ["DAY", "T0", "Attempt", "workload"]
