"""DNS lists as an SMTP client meets them: a real Postfix asking postgate, which asks NSD.

A client listed with weight over the threshold gets Postfix's
reject_rbl_client wording with the zone and the TXT text; one under it is
delivered; with the DNS server stopped mail still flows, answered within the
DNS deadline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.integration.support.nsd import Nsd
from tests.integration.support.postgates import Listener
from tests.integration.support.smtp_client import Client, SmtpSession, message, new_token

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.support.postfix import PrivatePostfix
    from tests.integration.support.postgates import Postgates

OPEN = "open@example.com"
ZONES = {
    "zen.example": (
        "7.100.51.198 IN A 127.0.0.2\n"
        '7.100.51.198 IN TXT "https://zen.example/query/198.51.100.7"\n'
        "8.100.51.198 IN A 127.0.0.10\n"
    ),
}
CONFIG = """\
[daemon]
deadline = 1.0

[dns]
servers = ["127.0.0.1:{port}"]
deadline = 0.5
query_timeout = 1.0

[dns.lists.zen]
zone = "zen.example"
answers = ["127.0.0.[2..9]"]
weight = 3

[dns.lists.pbl]
zone = "zen.example"
answers = ["127.0.0.[10..11]"]
weight = 1

[[rules]]
id = "DNSBL"
state = "RCPT"
dnsbl_score = {{ ge = 3 }}
reply = "dnsbl_listed"
"""


def rcpt(postfix: PrivatePostfix, client: str, token: str = "") -> tuple[str, float]:
    """RCPT from ``client`` (and DATA with ``token`` when given): the reply and its time."""
    with SmtpSession(postfix.ports["gate"], Client(addr=client)) as smtp:
        smtp.mail("s@example.org")
        started = time.monotonic()
        reply = smtp.rcpt(OPEN)
        took = time.monotonic() - started
        if token and reply.code == 250:
            smtp.data(message(token))
    return reply.line, took


def test_listed_rejected_unlisted_delivered_and_mail_flows_without_dns(
    postfix: PrivatePostfix, postgates: Postgates, tmp_path: Path
) -> None:
    nsd = Nsd(tmp_path / "nsd", ZONES)
    with nsd:
        config = postgates.config("dnsbl", CONFIG.format(port=nsd.port))
        daemon = postgates.start(config, [Listener.tcp(postfix.policy_port)])
        listed, _ = rcpt(postfix, "198.51.100.7")
        assert (
            f"554 5.7.1 <{OPEN}>: Recipient address rejected: Service unavailable; Client host "
            "[198.51.100.7] blocked using zen.example; https://zen.example/query/198.51.100.7"
        ) == listed
        token = new_token()
        under, _ = rcpt(postfix, "198.51.100.8", token)  # pbl only: score 1
        assert under.startswith("250 ")
        assert OPEN == postfix.mailbox.wait(token, 1)[0]["Delivered-To"]
        nsd.stop()
        token = new_token()
        without, took = rcpt(postfix, "198.51.100.9", token)
        assert (without.startswith("250 "), True) == (True, took < 1.0), (without, took)
        assert OPEN == postfix.mailbox.wait(token, 1)[0]["Delivered-To"]
        daemon.stop()
    assert '"event":"dns_list_failing"' in daemon.log()
