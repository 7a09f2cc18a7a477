"""PREPEND as Postfix applies it at each stage, and what postgate says at load.

Postfix adds a PREPEND header once per recipient when the answer comes at
RCPT, once per message at DATA, and not at all at END-OF-MESSAGE, where it
logs a warning instead. postgate warns about the first and refuses the last
(docs/replies.md); these tests hold both claims against a real Postfix.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from tests.integration.support.postgates import Listener, Postgates
from tests.integration.support.scripted_policy import ScriptedPolicy
from tests.integration.support.smtp_client import (
    Client,
    SmtpSession,
    message,
    new_token,
    transaction,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from email.message import EmailMessage

    from tests.integration.support.postfix import LogWindow, PrivatePostfix

CLIENT = Client()
RECIPIENTS = ("first@example.com", "second@example.com")
HEADER_RULES = """\
[[rules]]
id = "ONE_PER_MESSAGE"
state = "DATA"
sender_domain = "data.example"
action = "PREPEND X-Postgate-Data: tagged"

[[rules]]
id = "PER_RECIPIENT"
state = "RCPT"
sender_domain = "rcpt.example"
action = "PREPEND X-Postgate-Rcpt: tagged"
"""
EOM_RULE = """\
[[rules]]
id = "TOO_LATE"
state = "END-OF-MESSAGE"
action = "PREPEND X-Postgate-Eom: tagged"
"""
EOM_WARNING = (
    r"warning: access table \S+: action PREPEND must be used before "
    r"smtpd_end_of_data_restrictions"
)


def deliver(postfix: PrivatePostfix, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """One message to ``recipients`` through the "gate" listener; the first copy delivered."""
    token = new_token()
    with SmtpSession(postfix.ports["gate"], CLIENT) as smtp:
        replies = transaction(smtp, sender, recipients, message(token))
    assert [250] * (len(recipients) + 2) == [r.code for r in replies], replies
    return postfix.mailbox.wait(token, len(recipients))[0]


def check(config: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postgate", "check", "-c", config],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_prepend_at_data_once_at_rcpt_per_recipient(
    postfix: PrivatePostfix, postgates: Postgates
) -> None:
    """state = "DATA" gives one header per message; RCPT one per recipient, as warned."""
    config = postgates.config("headers", HEADER_RULES)
    warned = check(str(config))
    assert 0 == warned.returncode, warned.stderr
    assert "PER_RECIPIENT" in warned.stderr
    assert "once per recipient" in warned.stderr
    daemon = postgates.start(config, [Listener.tcp(postfix.policy_port)])
    try:
        data = deliver(postfix, "someone@data.example", RECIPIENTS)
        rcpt = deliver(postfix, "someone@rcpt.example", RECIPIENTS)
    finally:
        daemon.stop()
    assert (["tagged"], ["tagged", "tagged"]) == (
        data.get_all("X-Postgate-Data"),
        rcpt.get_all("X-Postgate-Rcpt"),
    )


def test_prepend_at_end_of_message_is_ignored_by_postfix_and_refused_by_postgate(
    postfix: PrivatePostfix, postgates: Postgates, mail_log: LogWindow
) -> None:
    """Another server's PREPEND at END-OF-MESSAGE: a Postfix warning, no header."""
    refused = check(str(postgates.config("eom", EOM_RULE)))
    assert 78 == refused.returncode
    assert "smtpd_end_of_data_restrictions" in refused.stderr

    mail_log.allow(EOM_WARNING)

    def late_prepend(request: Mapping[str, str]) -> str:
        if request.get("protocol_state") == "END-OF-MESSAGE":
            return "PREPEND X-Postgate-Eom: tagged"
        return "DUNNO"

    with ScriptedPolicy(("127.0.0.1", postfix.policy_port)) as server:
        server.answer = late_prepend
        delivered = deliver(postfix, "someone@eom.example", RECIPIENTS[:1])
    postfix.log.barrier()
    assert delivered.get_all("X-Postgate-Eom") is None
    assert any("action PREPEND must be used before" in line for line in mail_log.lines()), (
        mail_log.lines()
    )
