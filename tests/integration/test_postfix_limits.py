"""Rate limits through a real Postfix: checked at RCPT, charged once at END-OF-MESSAGE.

postgate is asked from the "gate" listener at RCPT, DATA and END-OF-MESSAGE
(smtpd_end_of_data_restrictions wired: docs/postfix.md, Rate limits). A user
(XCLIENT LOGIN, so ``sasl_username``) may send 3 messages an hour: three
messages of two recipients are accepted; a message refused at DATA and one
abandoned with RSET are not charged; the next message is deferred at RCPT
with the limit's 4xx, and still is after postgate restarts.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest

from tests.integration.support.postgates import Listener, Postgates
from tests.integration.support.smtp_client import Client, SmtpSession, message, new_token

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.support.daemon import Daemon
    from tests.integration.support.postfix import PrivatePostfix

USER = Client(login="limited-user")
RECIPIENTS = ("a@example.com", "b@example.com")
REFUSE_AT_DATA = "refused-at-data@example.org"
DEFERRED = "450 4.7.1 <a@example.com>: Recipient address rejected: Rate limit exceeded (3 per hour)"
CONFIG = f"""
[daemon]
log_level = "info"

[[rules]]
id = "USER_RATE"
sasl_username = {{ present = true }}
limit = {{ key = ["sasl_username"], count = "messages", windows = ["3 per hour", "100 per day"] }}
action = "450 4.7.1 Rate limit exceeded ({{limit}} per {{window}}), try again in {{retry}}"

[[rules]]
id = "DATA_REFUSAL"
state = "DATA"
sender = "{REFUSE_AT_DATA}"
action = "554 5.7.1 Refused at DATA"
"""


@pytest.fixture(scope="module")
def limited(postfix: PrivatePostfix, postgates: Postgates) -> tuple[Path, Daemon]:
    config = postgates.config("limits", CONFIG)
    return config, postgates.start(config, [Listener.tcp(postfix.policy_port)])


def send(smtp: SmtpSession, sender: str = "user@example.org") -> list[str]:
    replies = [smtp.mail(sender).line] + [smtp.rcpt(r).line for r in RECIPIENTS]
    if all(line.startswith("250") for line in replies):
        replies.append(smtp.data(message(new_token())).line)
    smtp.command("RSET")
    return replies


def events(daemon: Daemon, name: str) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    return [event for event in parsed if event.get("event") == name]


def test_n_messages_pass_refused_and_abandoned_ones_are_free_the_next_waits(
    postfix: PrivatePostfix, postgates: Postgates, limited: tuple[Path, Daemon]
) -> None:
    config, daemon = limited
    port = postfix.ports["gate"]
    with SmtpSession(port, USER) as smtp:
        first, second = send(smtp), send(smtp)
        refused = send(smtp, REFUSE_AT_DATA)
        smtp.mail("user@example.org")
        abandoned = smtp.rcpt(RECIPIENTS[0]).line
        smtp.command("RSET")
        third = send(smtp)
    with SmtpSession(port, USER) as smtp:
        fourth = smtp.mail("user@example.org").line, smtp.rcpt(RECIPIENTS[0]).line
    for accepted in (first, second, third):
        assert accepted[-1].startswith("250 2.0.0 Ok: queued"), accepted
    assert refused[-1].startswith("554 5.7.1"), refused
    assert abandoned.startswith("250"), abandoned
    assert fourth[1].startswith(DEFERRED), fourth
    # The first message leaves the hour 60 to 66 minutes after it was sent.
    assert re.search(r"try again in 6[0-6] minutes$", fourth[1]), fourth
    assert 1 == len(events(daemon, "limit_exceeded")), daemon.log()

    daemon.stop()
    restarted = postgates.start(config, [Listener.tcp(postfix.policy_port)])
    with SmtpSession(port, USER) as smtp:
        smtp.mail("user@example.org")
        after = smtp.rcpt(RECIPIENTS[0]).line
    assert after.startswith(DEFERRED), (after, restarted.log())
