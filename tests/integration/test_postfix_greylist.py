"""Greylisting through a real Postfix, with a 3-second delay.

postgate is asked at RCPT from the "gate" listener. The rule greylists only
clients without a verified reverse DNS name (XCLIENT NAME=[UNAVAILABLE], so
Postfix sends ``client_name=unknown``): their first attempt gets the defer
line with the time left, a retry before the delay is deferred again, a retry
after it is delivered. A client with a name is never deferred. A triplet
first seen before a restart passes after it, once the delay is over, and a
triplet that passed before the restart passes at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.integration.support.postgates import Listener, Postgates
from tests.integration.support.smtp_client import Client, SmtpSession, message, new_token

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.support.daemon import Daemon
    from tests.integration.support.postfix import PrivatePostfix

DELAY = 3.0
UNNAMED = Client(addr="198.51.100.7", name="[UNAVAILABLE]")
SIBLING = Client(addr="198.51.100.200", name="[UNAVAILABLE]")  # same /24
NAMED = Client(addr="203.0.113.9", name="mail.named.example")
RECIPIENT = "a@example.com"
CONFIG = f"""
[daemon]
log_level = "info"

[[rules]]
id = "GREYLIST_NO_RDNS"
state = "RCPT"
client_name = "unknown"
greylist = {{ delay = {DELAY:g}, retry_window = "10m", lifetime = "1h" }}
action = "DEFER_IF_PERMIT 4.7.1 Greylisted, try again in {{retry}} seconds"
"""
GREYLISTED = f"450 4.7.1 <{RECIPIENT}>: Recipient address rejected: Greylisted, try again in"


@pytest.fixture(scope="module")
def greylisting(postfix: PrivatePostfix, postgates: Postgates) -> tuple[Path, Daemon]:
    config = postgates.config("greylist", CONFIG)
    return config, postgates.start(config, [Listener.tcp(postfix.policy_port)])


def attempt(postfix: PrivatePostfix, client: Client, sender: str) -> tuple[str, str]:
    """One delivery attempt: the RCPT reply, and the token of a message sent after a 250."""
    token = new_token()
    with SmtpSession(postfix.ports["gate"], client) as smtp:
        smtp.mail(sender)
        reply = smtp.rcpt(RECIPIENT).line
        if reply.startswith("250"):
            assert smtp.data(message(token)).line.startswith("250 2.0.0 Ok: queued")
    return reply, token


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_deferred_then_deferred_again_then_delivered(
    postfix: PrivatePostfix, greylisting: tuple[Path, Daemon]
) -> None:
    sender = f"{new_token()}@example.org"
    started = time.monotonic()
    first, _ = attempt(postfix, UNNAMED, sender)
    early, _ = attempt(postfix, SIBLING, sender)  # another address of the /24: same triplet
    assert first == f"{GREYLISTED} 3 seconds", first
    assert early.startswith(GREYLISTED), early
    sleep_until(started + DELAY + 0.5)
    later, token = attempt(postfix, SIBLING, sender)
    assert later.startswith("250"), later
    assert 1 == len(postfix.mailbox.wait(token, 1))


def test_a_client_the_rule_does_not_select_is_never_deferred(
    postfix: PrivatePostfix, greylisting: tuple[Path, Daemon]
) -> None:
    sender = f"{new_token()}@example.org"
    replies = [attempt(postfix, NAMED, sender)[0] for _ in range(2)]
    assert all(reply.startswith("250") for reply in replies), replies


def test_the_state_survives_a_restart(
    postfix: PrivatePostfix, postgates: Postgates, greylisting: tuple[Path, Daemon]
) -> None:
    config, daemon = greylisting
    known = f"{new_token()}@example.org"
    attempt(postfix, UNNAMED, known)
    waiting = f"{new_token()}@example.org"
    sleep_until(time.monotonic() + DELAY + 0.5)
    assert attempt(postfix, UNNAMED, known)[0].startswith("250")  # known from now on
    started = time.monotonic()
    assert attempt(postfix, UNNAMED, waiting)[0].startswith(GREYLISTED)
    daemon.stop()
    restarted = postgates.start(config, [Listener.tcp(postfix.policy_port)])
    assert attempt(postfix, UNNAMED, known)[0].startswith("250"), restarted.log()
    sleep_until(started + DELAY + 0.5)
    # Forgotten, this would be a first sight, and deferred.
    reply, token = attempt(postfix, UNNAMED, waiting)
    assert reply.startswith("250"), (reply, restarted.log())
    assert 1 == len(postfix.mailbox.wait(token, 1))
