"""The reference ruleset through a real Postfix: every rule, as the SMTP client sees it.

postgate runs conf/examples/reference.toml (a private copy whose trusted-certs
list also holds the harness's client certificate) and Postfix asks it first,
from the "gate" listener (docs/postfix.md, layout B), at RCPT, DATA and
END-OF-MESSAGE. Each scenario has its own sender, so its decision is found in
postgate's log: the rule id and the answer in docs/postfix.md come from there,
the reply from smtplib.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.support.postfix import PrivatePostfix, log_checked, postfix_version
from tests.integration.support.postfix_table import Row, code, render, stale_hint, sync
from tests.integration.support.postgates import (
    EXAMPLES,
    Listener,
    Postgates,
    decision,
    list_entries,
)
from tests.integration.support.smtp_client import (
    Client,
    Reply,
    SmtpSession,
    client_tls,
    message,
    new_token,
    transaction,
)

if TYPE_CHECKING:
    from tests.integration.support.daemon import Daemon

LISTS = EXAMPLES / "lists"
LOCAL = list_entries(LISTS / "local-domains.txt")[0]
USER = f"user@{LOCAL}"
FOREIGN = "someone@elsewhere.example"
BLOCKED_NET = ipaddress.ip_network(list_entries(LISTS / "client-blocklist.txt")[0])
BLOCKED_ADDR = str(next(iter(BLOCKED_NET.hosts())))
BLOCKED_DOMAIN = list_entries(LISTS / "sender-blocklist.txt")[0]
SPAMTRAP = list_entries(LISTS / "spamtraps.txt")[0]
SIZE_LIMIT = 10485760
CLIENT = Client()
RCPT_PREFIX = "{code} <{rcpt}>: Recipient address rejected: {text}"


def at_rcpt(reply: str, rcpt: str = USER) -> str:
    code, _, text = reply.partition(" ")
    dsn, _, words = text.partition(" ")
    return RCPT_PREFIX.format(code=f"{code} {dsn}", rcpt=rcpt, text=words)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One SMTP transaction aimed at one rule, and the reply the client must see."""

    name: str
    expect: str
    client: Client = CLIENT
    sender_domain: str = "example.org"
    recipients: tuple[str, ...] = (USER,)
    state: str = "RCPT"
    size: int | None = None
    body: int = 0
    tls: str = ""  # "cert": STARTTLS with the trusted client certificate, "plain": without
    deliver: bool = False


SCENARIOS = (
    Scenario(
        "declared size over the limit",
        at_rcpt("552 5.3.4 Message size exceeds fixed limit"),
        size=SIZE_LIMIT + 1,
    ),
    Scenario(
        "actual size over the limit",
        "552 5.3.4 <END-OF-MESSAGE>: End-of-data rejected: Message size exceeds fixed limit",
        state="END-OF-MESSAGE",
        body=SIZE_LIMIT + 1,
    ),
    Scenario("trusted certificate may relay", "250 2.1.5 Ok", recipients=(FOREIGN,), tls="cert"),
    Scenario(
        "client in the blocklist",
        at_rcpt("554 5.7.1 Client host rejected: listed in local blocklist"),
        client=Client(addr=BLOCKED_ADDR),
    ),
    Scenario(
        "sender domain in the blocklist",
        at_rcpt("554 5.7.1 Sender address rejected: domain is blocklisted"),
        sender_domain=BLOCKED_DOMAIN,
    ),
    Scenario(
        "login without TLS",
        at_rcpt("530 5.7.0 Must issue a STARTTLS command first"),
        client=Client(login="alice"),
    ),
    Scenario(
        "login with TLS",
        "250 2.1.5 Ok",
        client=Client(login="alice"),
        tls="plain",
        deliver=True,
    ),
    Scenario(
        "51 recipients at DATA",
        "452 4.5.3 <DATA>: Data command rejected: Error: too many recipients",
        recipients=tuple(f"r{i}@{LOCAL}" for i in range(51)),
        state="DATA",
    ),
    Scenario(
        "recipient is a spam trap",
        at_rcpt("554 5.7.1 Recipient address rejected: spamtrap", SPAMTRAP),
        recipients=(SPAMTRAP,),
    ),
    Scenario(
        "own network says HELO localhost",
        "250 2.1.5 Ok",
        client=Client(addr="10.1.2.3", helo="localhost"),
    ),
    Scenario(
        "HELO localhost",
        at_rcpt("554 5.7.1 Helo command rejected: localhost is not a valid HELO"),
        client=Client(helo="localhost"),
    ),
    Scenario(
        "HELO is a bare IP address",
        at_rcpt("554 5.7.1 Helo command rejected: bare IP address"),
        client=Client(helo="192.0.2.10"),
    ),
    Scenario(
        "client without any host name",
        at_rcpt("450 4.7.25 Client host rejected: cannot find your hostname"),
        client=Client(name="[UNAVAILABLE]", reverse_name="[UNAVAILABLE]"),
    ),
    Scenario(
        "dynamic-looking client name",
        at_rcpt("554 5.7.1 Client host rejected: dynamic address, use your provider relay"),
        client=Client(name="dyn-192-0-2-10.isp.example"),
    ),
    Scenario(
        "local sender from outside",
        at_rcpt("554 5.7.1 Sender address rejected: not logged in"),
        sender_domain=LOCAL,
    ),
    Scenario("mail for a local domain", "250 2.1.5 Ok", deliver=True),
    Scenario(
        "relay attempt",
        at_rcpt("554 5.7.1 Relay access denied", FOREIGN),
        recipients=(FOREIGN,),
    ),
)


@dataclass(frozen=True, slots=True)
class Observation:
    scenario: Scenario
    replies: list[Reply]
    decision: dict[str, Any]
    delivered_to: list[str]

    @property
    def reply(self) -> Reply:
        """The reply that decided: the RCPT's, or DATA's / end of data's."""
        return self.replies[1] if self.scenario.state == "RCPT" else self.replies[-1]


@pytest.fixture(scope="module")
def reference(postfix: PrivatePostfix, postgates: Postgates) -> Daemon:
    """postgate with the reference ruleset, trusting the harness's client certificate."""
    examples = postgates.copy_examples()
    with (examples / "lists" / "trusted-certs.txt").open("a") as certs:
        certs.write(f"{postfix.client_fingerprint}  # the integration tests' client\n")
    return postgates.start(examples / "reference.toml", [Listener.tcp(postfix.policy_port)])


def observe(postfix: PrivatePostfix, daemon: Daemon, scenario: Scenario) -> Observation:
    token = new_token()
    sender = f"{token}@{scenario.sender_domain}"
    certs = postfix.layout.tls if scenario.tls == "cert" else None
    tls = client_tls(certs) if scenario.tls else None
    content = message(token, body_bytes=scenario.body)
    sends_data = scenario.state != "RCPT" or scenario.deliver
    with SmtpSession(postfix.ports["gate"], scenario.client, tls) as smtp:
        replies = transaction(
            smtp, sender, scenario.recipients, content if sends_data else None, scenario.size
        )
    delivered = postfix.mailbox.wait(token, 1) if scenario.deliver else []
    event = decision(daemon, sender=sender, protocol_state=scenario.state)
    return Observation(scenario, replies, event, [str(m["Delivered-To"]) for m in delivered])


@pytest.fixture(scope="module")
def observed(postfix: PrivatePostfix, reference: Daemon) -> dict[str, Observation]:
    """Every scenario, run once, in order."""
    with log_checked(postfix):
        return {s.name: observe(postfix, reference, s) for s in SCENARIOS}


class TestReferenceRuleset:
    @pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name.replace(" ", "-"))
    def test_client_sees_the_rule_reply(
        self, observed: dict[str, Observation], scenario: Scenario
    ) -> None:
        """The SMTP reply for each scenario is exactly the documented line."""
        assert scenario.expect == observed[scenario.name].reply.stable

    def test_every_rule_of_the_ruleset_decided_one_scenario(
        self, observed: dict[str, Observation]
    ) -> None:
        """Each rule of reference.toml, and the implicit default, answered at least once."""
        rules = {o.decision["rule"] for o in observed.values()}
        expected = {
            "SIZE",
            "TRUSTED_CERT",
            "CLIENT_BLOCKLIST",
            "SENDER_BLOCKLIST",
            "STARTTLS_REQUIRED",
            "TOO_MANY_RECIPIENTS",
            "SPAMTRAP",
            "HELO_LOCALHOST",
            "HELO_BARE_IP",
            "CLIENT_UNKNOWN",
            "CLIENT_DYNAMIC",
            "LOCAL_SENDER",
            "LOCAL_RECIPIENT",
            "RELAY",
            "DEFAULT",
        }
        assert expected == rules

    def test_accepted_messages_are_delivered(self, observed: dict[str, Observation]) -> None:
        delivered = {o.scenario.name: o.delivered_to for o in observed.values() if o.delivered_to}
        expected = {"login with TLS": [USER], "mail for a local domain": [USER]}
        assert expected == delivered

    def test_relay_is_refused_by_postfix_when_postgate_answers_dunno(
        self, postfix: PrivatePostfix, reference: Daemon
    ) -> None:
        """From our own network postgate has no opinion, and Postfix's relay check decides."""
        with SmtpSession(postfix.ports["gate"], Client(addr="10.1.2.3")) as smtp:
            smtp.mail("s@example.org")
            reply = smtp.rcpt(FOREIGN)
        assert f"554 5.7.1 <{FOREIGN}>: Relay access denied" == reply.line


class TestEndOfDataReject:
    def test_next_transaction_after_an_end_of_data_reject(
        self, postfix: PrivatePostfix, reference: Daemon
    ) -> None:
        """Before 3.7.22 Postfix keeps the rejected transaction.

        docs/protocol.md, Postfix's own limits, and one bug.
        """
        with SmtpSession(postfix.ports["gate"], Client()) as smtp:
            transaction(smtp, "big@example.org", [USER], message("big", body_bytes=SIZE_LIMIT + 1))
            again = smtp.mail("next@example.org")
        fixed = tuple(int(p) for p in postfix_version().split(".")[:3]) >= (3, 7, 22)
        expected = "250 2.1.0 Ok" if fixed else "503 5.5.1 Error: nested MAIL command"
        assert expected == again.line


def test_reference_table_in_docs_is_what_postfix_did(observed: dict[str, Observation]) -> None:
    """docs/postfix.md's reference table is exactly what this run observed."""
    rows = [
        Row(
            f"`{o.decision['rule']}`: {o.scenario.name}",
            code(o.decision["action"]),
            code(o.reply.stable),
            f"delivered to `{', '.join(o.delivered_to)}`" if o.delivered_to else "",
        )
        for o in observed.values()
    ]
    columns = ("Rule: scenario", "postgate answers", "SMTP client sees", "Effect")
    rendered = render(rows, columns)
    assert rendered == sync("reference", rendered), stale_hint("reference")
