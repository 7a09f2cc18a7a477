"""Every action type and every named reply, answered by postgate, as Postfix applies them.

postgate runs a config with one rule per case, keyed on the recipient's local
part and the protocol state. Each case is one SMTP transaction through the
"gate" listener; the observation is the reply the client saw, what happened to
the message (delivered where, with which extra header, held, discarded), the
Postfix log line the action produced, and postgate's own logged answer. The
"actions" table of docs/postfix.md is rendered from these observations.
"""

from __future__ import annotations

import dataclasses
import json
import re
import smtplib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from postgate.replies import planned
from postgate.replies.catalogue import NAMED
from postgate.replies.model import Verb
from tests.integration.support.postfix import PrivatePostfix, log_checked
from tests.integration.support.postfix_config import LATER_REJECT_LOCALPART
from tests.integration.support.postfix_table import Row, code, render, stale_hint, sync
from tests.integration.support.postgates import Listener, Postgates, decision
from tests.integration.support.smtp_client import Client, Reply, SmtpSession, message, new_token
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from email.message import EmailMessage

    from tests.integration.support.daemon import Daemon

DOMAIN = "example.com"
CLIENT = Client()
STANDARD_HEADERS = frozenset(
    {"return-path", "x-original-to", "delivered-to", "received", "from", "subject"}
    | {"x-test-token", "message-id", "date"}
)


@dataclass(frozen=True, slots=True)
class Case:
    """One rule of the test config: at ``state``, recipient ``localpart`` gets ``action``."""

    localpart: str
    action: str = ""
    reply: str = ""  # a named reply instead of a literal action
    state: str = "RCPT"
    note: str = ""  # what else the row's setup does, for the docs table

    @property
    def recipient(self) -> str:
        return f"{self.localpart}@{DOMAIN}"

    def describe(self) -> str:
        named = f"`{self.reply}`" if self.reply else ""
        return " ".join(part for part in (self.state, named, self.note) if part)

    def rule(self, index: int) -> str:
        # Replies of planned features are not offered to rules yet: the same
        # line, written out, shows what Postfix will do with them.
        if self.reply in planned.REPLIES:
            return dataclasses.replace(self, reply="", action=NAMED[self.reply].line).rule(index)
        answer = f"reply = {json.dumps(self.reply)}" if self.reply else ""
        answer = answer or f"action = {json.dumps(self.action)}"
        return (
            f'[[rules]]\nid = "CASE_{index}"\nstate = "{self.state}"\n'
            f"recipient_localpart = {json.dumps(self.localpart)}\n{answer}\n\n"
        )


ACTION_CASES = (
    Case("ok", "OK"),
    Case("dunno", "DUNNO"),
    Case("reject", "REJECT"),
    Case("reject-text", "REJECT 5.7.1 Blocked by local policy"),
    Case("defer", "DEFER"),
    Case("defer-text", "DEFER 4.7.1 Try again later"),
    Case("defer-if-permit", "DEFER_IF_PERMIT 4.7.1 Greylisted, try again later"),
    Case("defer-if-reject", "DEFER_IF_REJECT 4.7.1 Allow list lookup failed"),
    Case(
        LATER_REJECT_LOCALPART,
        "DEFER_IF_REJECT 4.7.1 Allow list lookup failed",
        note="a later restriction says REJECT",
    ),
    Case("code-4nn", "450 4.2.1 Mailbox temporarily not accepting mail"),
    Case("code-5nn", "550 5.1.1 User unknown"),
    Case("code-421", "421 4.7.0 Too many connections, try again later"),
    Case("code-521", "521 5.7.1 Go away for good"),
    Case("hold", "HOLD"),
    Case("discard", "DISCARD"),
    Case("prepend", "PREPEND X-Postgate: tagged"),
    Case("redirect", f"REDIRECT redirected@{DOMAIN}"),
    Case("bcc", f"BCC copy@{DOMAIN}"),
    Case("warn", "WARN looks suspicious"),
    Case("info", "INFO noted"),
    Case("filter", "FILTER filtered:example"),
    Case("data-reject", "554 5.7.1 Not at DATA", state="DATA"),
    Case("eod-reject", "550 5.7.1 Message content rejected", state="END-OF-MESSAGE"),
    Case("eod-hold", "HOLD", state="END-OF-MESSAGE"),
)
# The stage a named reply is meant for, when it is not RCPT.
NAMED_STATES = {
    "message_too_large_eom": "END-OF-MESSAGE",
    "content_rejected": "END-OF-MESSAGE",
    "too_many_recipients": "DATA",
}
NAMED_CASES = tuple(
    Case(f"named-{name.replace('_', '-')}", reply=name, state=NAMED_STATES.get(name, "RCPT"))
    for name in NAMED
)
CASES = ACTION_CASES + NAMED_CASES


@dataclass(frozen=True, slots=True)
class Observation:
    """What one case did, seen from the SMTP client, the mailboxes, the queue and the logs."""

    case: Case
    reply: Reply
    data: Reply | None
    decision: dict[str, Any]
    delivered: list[tuple[str, str]]  # (maildir folder, Delivered-To)
    extra_headers: list[str]
    held: bool
    closed: bool
    log: list[str]

    @property
    def stage_reply(self) -> Reply:
        """The reply to the command postgate's answer applied to."""
        return self.reply if self.case.state == "RCPT" or self.data is None else self.data

    def effect(self) -> str:
        parts = [f"log `{line}`" for line in self.log]
        parts += [f"header `{h}` added" for h in self.extra_headers]
        parts += [_delivery(folder, to) for folder, to in self.delivered]
        if self.held:
            parts.append("message in the hold queue")
        elif self.data is not None and self.data.code == 250 and not self.delivered:
            parts.append("accepted, then discarded")
        if self.closed:
            parts.append("Postfix closes the connection")
        return "; ".join(parts)


def _delivery(folder: str, to: str) -> str:
    via = " through transport `filtered`" if folder == "filtered" else ""
    return f"delivered{via} to `{to}`"


def config_text() -> str:
    return '[daemon]\nlog_level = "info"\n\n' + "".join(c.rule(i) for i, c in enumerate(CASES))


@pytest.fixture(scope="module")
def actions(postfix: PrivatePostfix, postgates: Postgates) -> Daemon:
    config = postgates.config("actions", config_text())
    listeners = [Listener.tcp(postfix.policy_port), Listener.unix(postfix.policy_socket)]
    return postgates.start(config, listeners)


def settled(postfix: PrivatePostfix, queue_id: str) -> bool:
    """The message is delivered, discarded or held: nothing more will happen to it."""
    queued = postfix.queued(queue_id)
    return queued is None or queued["queue_name"] == "hold"


def action_log(lines: list[str], sender: str) -> list[str]:
    """smtpd's line for a non-reject action (warn, hold, redirect...), shortened."""
    found = []
    for line in lines:
        hit = re.search(r": (?:NOQUEUE|[0-9A-F]+): ((?!reject)\w+: .*?); from=<([^>]*)>", line)
        if hit and hit.group(2) == sender:
            found.append(hit.group(1))
    return found


def extra_headers(messages: list[EmailMessage]) -> list[str]:
    return sorted(
        {f"{k}: {v}" for m in messages for k, v in m.items() if k.lower() not in STANDARD_HEADERS}
    )


def observe(postfix: PrivatePostfix, daemon: Daemon, case: Case, port: int) -> Observation:
    token = new_token()
    sender = f"{token}@example.org"
    start = postfix.log.size()
    with SmtpSession(port, CLIENT) as smtp:
        smtp.mail(sender)
        reply = smtp.rcpt(case.recipient)
        data = smtp.data(message(token)) if reply.code == 250 else None
        closed = _closed(smtp)
    held = False
    if data is not None and data.queue_id:
        wait_until(lambda: settled(postfix, data.queue_id), f"{data.queue_id} to settle")
        held = postfix.queued(data.queue_id) is not None
        if held:
            postfix.delete(data.queue_id)
    messages = {f: postfix.mailbox.messages(token, f) for f in ("all", "filtered")}
    postfix.log.barrier()
    return Observation(
        case,
        reply,
        data,
        decision(daemon, sender=sender, protocol_state=case.state),
        [(f, str(m["Delivered-To"])) for f, found in messages.items() for m in found],
        extra_headers(messages["all"] + messages["filtered"]),
        held,
        closed,
        action_log(postfix.log.lines_from(start), sender),
    )


def _closed(smtp: SmtpSession) -> bool:
    try:
        smtp.command("NOOP")
    except smtplib.SMTPServerDisconnected:
        return True
    return False


@pytest.fixture(scope="module")
def observed(postfix: PrivatePostfix, actions: Daemon) -> dict[str, Observation]:
    """Every case once, in order, through TCP."""
    with log_checked(postfix):
        return {c.localpart: observe(postfix, actions, c, postfix.ports["gate"]) for c in CASES}


def rcpt_line(code: str, rcpt: str, text: str) -> str:
    return f"{code} <{rcpt}>: Recipient address rejected: {text}"


def r(localpart: str) -> str:
    return f"{localpart}@{DOMAIN}"


# What access(5) and docs/protocol.md (Actions) say the client sees, per action case.
EXPECTED_REPLY = {
    "ok": "250 2.1.5 Ok",
    "dunno": "250 2.1.5 Ok",
    "reject": rcpt_line("554 5.7.1", r("reject"), "Access denied"),
    "reject-text": rcpt_line("554 5.7.1", r("reject-text"), "Blocked by local policy"),
    "defer": rcpt_line("450 4.7.1", r("defer"), "Access denied"),
    "defer-text": rcpt_line("450 4.7.1", r("defer-text"), "Try again later"),
    "defer-if-permit": rcpt_line("450 4.7.1", r("defer-if-permit"), "Greylisted, try again later"),
    "defer-if-reject": "250 2.1.5 Ok",
    LATER_REJECT_LOCALPART: rcpt_line(
        "450 4.7.1", r(LATER_REJECT_LOCALPART), "Allow list lookup failed"
    ),
    "code-4nn": rcpt_line("450 4.2.1", r("code-4nn"), "Mailbox temporarily not accepting mail"),
    "code-5nn": rcpt_line("550 5.1.1", r("code-5nn"), "User unknown"),
    "code-421": rcpt_line("421 4.7.0", r("code-421"), "Too many connections, try again later"),
    "code-521": rcpt_line("521 5.7.1", r("code-521"), "Go away for good"),
    "hold": "250 2.1.5 Ok",
    "discard": "250 2.1.5 Ok",
    "prepend": "250 2.1.5 Ok",
    "redirect": "250 2.1.5 Ok",
    "bcc": "250 2.1.5 Ok",
    "warn": "250 2.1.5 Ok",
    "info": "250 2.1.5 Ok",
    "filter": "250 2.1.5 Ok",
    "data-reject": "554 5.7.1 <DATA>: Data command rejected: Not at DATA",
    "eod-reject": "550 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Message content rejected",
    "eod-hold": "250 2.0.0 Ok: queued as <id>",
}


class TestActionTypes:
    @pytest.mark.parametrize("case", ACTION_CASES, ids=lambda c: c.localpart)
    def test_client_sees_what_postfix_documents(
        self, observed: dict[str, Observation], case: Case
    ) -> None:
        """The reply to the command the action applied to is the documented line."""
        assert EXPECTED_REPLY[case.localpart] == observed[case.localpart].stage_reply.stable

    def test_accepted_messages_are_delivered_to_the_recipient(
        self, observed: dict[str, Observation]
    ) -> None:
        """OK, DUNNO, DEFER_IF_REJECT alone, WARN and INFO deliver to the recipient as sent."""
        names = ("ok", "dunno", "defer-if-reject", "warn", "info")
        expected = {n: [("all", r(n))] for n in names}
        assert expected == {n: observed[n].delivered for n in names}

    def test_hold_puts_the_message_in_the_hold_queue(
        self, observed: dict[str, Observation]
    ) -> None:
        """HOLD at RCPT and at END-OF-MESSAGE: accepted, held, not delivered."""
        expected: dict[str, tuple[bool, list[tuple[str, str]]]]
        expected = {"hold": (True, []), "eod-hold": (True, [])}
        actual = {n: (observed[n].held, observed[n].delivered) for n in expected}
        assert expected == actual

    def test_discard_accepts_and_delivers_nothing(self, observed: dict[str, Observation]) -> None:
        """DISCARD: the client gets 250 for the message, nobody gets the message."""
        obs = observed["discard"]
        assert (250, [], False) == (obs.data.code if obs.data else 0, obs.delivered, obs.held)

    def test_prepend_adds_the_header_to_the_delivered_message(
        self, observed: dict[str, Observation]
    ) -> None:
        expected = (["X-Postgate: tagged"], [("all", r("prepend"))])
        obs = observed["prepend"]
        assert expected == (obs.extra_headers, obs.delivered)

    def test_redirect_bcc_and_filter_change_where_the_message_goes(
        self, observed: dict[str, Observation]
    ) -> None:
        """REDIRECT replaces the recipient, BCC adds one, FILTER picks the transport."""
        expected = {
            "redirect": [("all", r("redirected"))],
            "bcc": sorted([("all", r("bcc")), ("all", r("copy"))]),
            "filter": [("filtered", r("filter"))],
        }
        assert expected == {n: sorted(observed[n].delivered) for n in expected}

    def test_warn_and_info_write_a_log_line(self, observed: dict[str, Observation]) -> None:
        """WARN and INFO only log, with postgate's text."""
        expected = {
            "warn": ["warn: RCPT from mail.client.example[192.0.2.10]: looks suspicious"],
            "info": ["info: RCPT from mail.client.example[192.0.2.10]: noted"],
        }
        assert expected == {n: observed[n].log for n in expected}

    def test_421_and_521_close_the_connection(self, observed: dict[str, Observation]) -> None:
        """After a 421 or 521 reply Postfix hangs up (docs/protocol.md, The action words)."""
        expected = {"code-421": True, "code-521": True, "code-5nn": False}
        assert expected == {n: observed[n].closed for n in expected}

    def test_postgate_logged_the_answer_it_was_configured_with(
        self, observed: dict[str, Observation]
    ) -> None:
        """The decision log names each case's rule and action, so the docs table can quote it."""
        expected = {c.localpart: c.action for c in ACTION_CASES}
        assert expected == {
            c.localpart: observed[c.localpart].decision["action"] for c in ACTION_CASES
        }


# smtpd_dsn_fix() in recipient context (docs/protocol.md, Numeric replies and
# enhanced status codes): sender-address
# details become recipient-address ones, unknown X.1.Y details become X.1.0.
RECIPIENT_DETAIL = {"1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "3", "8": "2"}


def in_context(dsn: str, state: str) -> str:
    """The enhanced code Postfix sends for ``dsn`` at ``state`` (no sender list involved)."""
    klass, subject, detail = dsn.split(".")
    if subject != "1":
        return dsn
    if state != "RCPT":
        return f"{klass}.0.0"
    return f"{klass}.1.{RECIPIENT_DETAIL.get(detail, '0')}"


def named_expectation(case: Case) -> str:
    action = NAMED[case.reply]
    if action.verb in (Verb.OK, Verb.DUNNO):
        return "250 2.1.5 Ok" if case.state == "RCPT" else "250 2.0.0 Ok: queued as <id>"
    code = str(action.code) if action.verb is Verb.CODE else "450"
    text = action.text.replace("{client_address}", CLIENT.addr)
    # dnsbl_listed without a DNS-list check: Postfix's wording, zone unknown, no TXT
    text = text.replace("{dnsbl_what}", f"Client host [{CLIENT.addr}]")
    text = text.replace("{dnsbl_zone}", "unknown").replace("{dnsbl_reason}", "")
    where = {"RCPT": (case.recipient, "Recipient address"), "DATA": ("DATA", "Data command")}
    name, what = where.get(case.state, ("END-OF-MESSAGE", "End-of-data"))
    return f"{code} {in_context(action.dsn or '', case.state)} <{name}>: {what} rejected: {text}"


class TestNamedReplies:
    @pytest.mark.parametrize("case", NAMED_CASES, ids=lambda c: c.reply)
    def test_client_sees_the_named_reply(
        self, observed: dict[str, Observation], case: Case
    ) -> None:
        """Each catalogue reply reaches the client with Postfix's prefix and its own codes."""
        assert named_expectation(case) == observed[case.localpart].stage_reply.stable


class TestTransportsAndLayouts:
    @pytest.mark.parametrize("localpart", ["reject", "prepend", "hold", "named-relay-denied"])
    def test_unix_socket_gives_the_same_results_as_tcp(
        self,
        postfix: PrivatePostfix,
        actions: Daemon,
        observed: dict[str, Observation],
        localpart: str,
    ) -> None:
        """The same case through the UNIX socket listener has the same reply and effect."""
        case = next(c for c in CASES if c.localpart == localpart)
        over_unix = observe(postfix, actions, case, postfix.ports["unix"])
        tcp = observed[localpart]
        assert (tcp.stage_reply.stable, tcp.effect()) == (
            over_unix.stage_reply.stable,
            over_unix.effect(),
        )

    @pytest.mark.parametrize("name", ["sender_syntax", "sender_domain_not_found"])
    def test_sender_codes_keep_their_meaning_from_the_sender_restrictions(
        self, postfix: PrivatePostfix, actions: Daemon, name: str
    ) -> None:
        """From smtpd_sender_restrictions, X.1.7 and X.1.8 reach the client unmapped."""
        action = NAMED[name]
        with SmtpSession(postfix.ports["sender"], CLIENT) as smtp:
            smtp.mail("s@example.org")
            reply = smtp.rcpt(r(f"named-{name.replace('_', '-')}"))
        expected = f"{action.code} {action.dsn} <s@example.org>: Sender address rejected: "
        assert expected + action.text == reply.line

    def test_ok_before_the_relay_check_makes_an_open_relay(
        self, postfix: PrivatePostfix, actions: Daemon
    ) -> None:
        """An OK for a foreign recipient relays when postgate is asked first, not when last."""
        foreign = "ok@elsewhere.example"
        replies = {}
        for service in ("gate", "safe"):
            with SmtpSession(postfix.ports[service], CLIENT) as smtp:
                smtp.mail("s@example.org")
                replies[service] = smtp.rcpt(foreign).line
        expected = {"gate": "250 2.1.5 Ok", "safe": f"554 5.7.1 <{foreign}>: Relay access denied"}
        assert expected == replies


def test_actions_table_in_docs_is_what_postfix_did(observed: dict[str, Observation]) -> None:
    """docs/postfix.md's action table is exactly what this run observed."""
    rows = [
        Row(
            o.case.describe(),
            code(o.decision["action"]),
            code(o.stage_reply.stable),
            o.effect(),
        )
        for o in observed.values()
    ]
    columns = ("Stage, named reply", "postgate answers", "SMTP client sees", "Postfix does")
    rendered = render(rows, columns)
    assert rendered == sync("actions", rendered), stale_hint("actions")
