"""The private Postfix harness itself, checked against a scripted policy server.

If these fail, every other Postfix test is meaningless: they show that XCLIENT
presents the intended client, that Postfix asks at RCPT, DATA and
END-OF-MESSAGE over TCP and over the UNIX socket, and that mail is delivered
where the tests look for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.support.postfix import LogWindow, PrivatePostfix, postfix_version
from tests.integration.support.scripted_policy import ScriptedPolicy
from tests.integration.support.smtp_client import (
    Client,
    SmtpSession,
    client_tls,
    message,
    new_token,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping


RCPT = "someone@example.com"


@pytest.fixture
def scripted(postfix: PrivatePostfix) -> Iterator[ScriptedPolicy]:
    """A scripted policy server on the instance's TCP policy slot."""
    with ScriptedPolicy(("127.0.0.1", postfix.policy_port)) as server:
        yield server


def pick(request: Mapping[str, str], *names: str) -> dict[str, str]:
    return {name: request.get(name, "<absent>") for name in names}


class TestInstance:
    def test_runs_from_its_own_configuration_directory(self, postfix: PrivatePostfix) -> None:
        """master(8) logs that it started from the temporary config dir, not /etc/postfix."""
        postfix.log.barrier()
        started = [ln for ln in postfix.log.lines_from(0) if "daemon started" in ln]
        expected = f"configuration {postfix.layout.config}"
        assert [expected] == [ln[ln.index("configuration") :] for ln in started]

    def test_version_is_the_one_installed(self, postfix: PrivatePostfix) -> None:
        """The running master reports the version postconf reports."""
        postfix.log.barrier()
        started = next(ln for ln in postfix.log.lines_from(0) if "daemon started" in ln)
        assert f"version {postfix_version()}," in started

    def test_every_process_belongs_to_the_instance(self, postfix: PrivatePostfix) -> None:
        """The processes found for teardown include master and its queue manager."""
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in postfix.processes()}
        assert {"master", "qmgr", "postlogd"} <= names


class TestXclient:
    def test_client_identity_reaches_the_policy_service(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """ADDR, NAME, REVERSE_NAME and the EHLO name arrive as the policy attributes."""
        client = Client("198.51.100.7", "mx.client.example", "ptr.client.example", "helo.example")
        with SmtpSession(postfix.ports["gate"], client) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
        expected = {
            "client_address": "198.51.100.7",
            "client_name": "mx.client.example",
            "reverse_client_name": "ptr.client.example",
            "helo_name": "helo.example",
        }
        assert expected == pick(scripted.seen("RCPT")[-1], *expected)

    def test_unavailable_names_arrive_as_unknown(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """XCLIENT NAME=[UNAVAILABLE] gives client_name=unknown, as a failed lookup would."""
        client = Client("203.0.113.5", "[UNAVAILABLE]", "[UNAVAILABLE]")
        with SmtpSession(postfix.ports["gate"], client) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
        expected = {"client_name": "unknown", "reverse_client_name": "unknown"}
        assert expected == pick(scripted.seen("RCPT")[-1], *expected)

    def test_ipv6_client_address_arrives_without_brackets(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """An IPv6 XCLIENT address reaches the policy unbracketed (docs/protocol.md, Attributes)."""
        with SmtpSession(postfix.ports["gate"], Client("2001:db8::25")) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
        assert scripted.seen("RCPT")[-1]["client_address"] == "2001:db8::25"

    def test_login_becomes_the_sasl_username(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """XCLIENT LOGIN sets sasl_username (sasl_method XCLIENT) without real SASL."""
        with SmtpSession(postfix.ports["gate"], Client(login="alice")) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
        expected = {"sasl_username": "alice", "sasl_method": "XCLIENT"}
        assert expected == pick(scripted.seen("RCPT")[-1], *expected)

    def test_client_certificate_reaches_the_policy_service(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """With STARTTLS and a client certificate, the fingerprint and key size arrive."""
        with SmtpSession(postfix.ports["gate"], Client(), client_tls(postfix.layout.tls)) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
        expected = {"ccert_fingerprint": postfix.client_fingerprint, "encryption_keysize": "256"}
        assert expected == pick(scripted.seen("RCPT")[-1], *expected)


class TestStagesAndTransports:
    @pytest.mark.parametrize("service", ["gate", "unix"])
    def test_policy_is_asked_at_rcpt_data_and_end_of_message(
        self, postfix: PrivatePostfix, service: str
    ) -> None:
        """One accepted message costs three requests, over TCP and over the UNIX socket."""
        slot = ("127.0.0.1", postfix.policy_port) if service == "gate" else postfix.policy_socket
        with ScriptedPolicy(slot) as server, SmtpSession(postfix.ports[service], Client()) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
            assert smtp.data(message(new_token())).code == 250
        states = [r["protocol_state"] for r in server.requests]
        assert states == ["RCPT", "DATA", "END-OF-MESSAGE"]

    def test_accepted_message_is_delivered_to_the_mailbox(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """A message the policy does not object to lands in the maildir, addressed right."""
        token = new_token()
        with SmtpSession(postfix.ports["gate"], Client()) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
            smtp.data(message(token))
        [delivered] = postfix.mailbox.wait(token, 1)
        assert delivered["Delivered-To"] == RCPT

    def test_safe_layout_refuses_relaying_before_asking(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy
    ) -> None:
        """In the recommended layout Postfix's own relay check answers; no request is sent."""
        with SmtpSession(postfix.ports["safe"], Client()) as smtp:
            smtp.mail("s@example.org")
            reply = smtp.rcpt("someone@elsewhere.example")
        expected = "554 5.7.1 <someone@elsewhere.example>: Relay access denied"
        assert (expected, []) == (reply.line, scripted.seen("RCPT"))


class TestLogCheck:
    def test_log_window_sees_a_policy_warning(
        self, postfix: PrivatePostfix, scripted: ScriptedPolicy, mail_log: LogWindow
    ) -> None:
        """The per-test log check reports a policy warning, so its silence elsewhere counts."""
        scripted.answer = lambda _request: None  # hang up: Postfix warns, retries, gives up
        with SmtpSession(postfix.ports["gate"], Client()) as smtp:
            smtp.mail("s@example.org")
            smtp.rcpt(RCPT)
        seen = {w[w.index("warning:") :] for w in mail_log.unexpected_warnings()}
        mail_log.allow(r"warning: problem talking to server")
        port = postfix.policy_port
        assert {f"warning: problem talking to server 127.0.0.1:{port}: Application error"} == seen
