"""Faults as Postfix sees them: postgate stopped, restarted, reloaded while mail flows.

What the SMTP client gets is Postfix's ``default_action`` while postgate is
unreachable (docs/protocol.md, When postgate cannot answer), and postgate's
own answers as soon as it is back; a reload never fails a request. Mail flows
from several SMTP clients at once, so several smtpd processes hold persistent
policy connections.
Replies are classified by "epoch": the test moves the epoch on at each step,
and a reply counts for an epoch only if its RCPT was both sent and answered in
it; a reply that straddles a step may be either side's. Never by timing.
"""

from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from tests.integration.support.postfix_config import DEFAULT_ACTION
from tests.integration.support.postfix_table import Row, code, render, stale_hint, sync
from tests.integration.support.postgates import Listener, Postgates
from tests.integration.support.scripted_policy import ScriptedPolicy
from tests.integration.support.smtp_client import Client, Reply, SmtpSession, message, new_token
from tests.support.waiting import WAIT, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

    from tests.integration.support.daemon import Daemon
    from tests.integration.support.postfix import LogWindow, PrivatePostfix

BLOCKED = "blocked@example.com"
OPEN = "open@example.com"
DEFAULT_451 = "451 4.3.5 <{r}>: Recipient address rejected: Server configuration problem"
REFUSED = r"warning: (connect to|problem talking to server) \S+: Connection refused"
CONFIG = """\
[daemon]
log_level = "info"

[[rules]]
id = "FLOW_BLOCKED"
recipient_localpart = "blocked"
action = "554 5.7.1 Blocked by version {version}"
"""
FAULT_ROWS = 11  # one per test below that observes a fault; the docs table needs them all
TRANSACTIONS_PER_SESSION = 4  # stays below smtpd_soft_error_limit (10): no error sleep


def blocked(version: int) -> str:
    return f"554 5.7.1 <{BLOCKED}>: Recipient address rejected: Blocked by version {version}"


def default(recipient: str) -> str:
    return DEFAULT_451.format(r=recipient)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One RCPT of the flow: the epochs it was sent and answered in, and the reply."""

    sent: str
    answered: str
    worker: int
    recipient: str
    reply: str


@dataclass
class MailFlow:
    """SMTP clients sending back to back, until told to stop or a bound is reached."""

    port: int
    workers: int = 3
    epoch: str = "before"
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> MailFlow:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            self.threads.append(thread)
            thread.start()
        return self

    def _run(self, worker: int, max_sessions: int = 500) -> None:
        for _ in range(max_sessions):
            if self.stopping.is_set():
                return
            try:
                self._session(worker)
            except Exception as exc:  # a lost request: kept as an outcome, asserted later
                lost = Outcome(self.epoch, self.epoch, worker, "<session>", f"lost: {exc!r}")
                self._record(lost)

    def _session(self, worker: int) -> None:
        with SmtpSession(self.port, Client()) as smtp:
            for _ in range(TRANSACTIONS_PER_SESSION):
                smtp.mail("flow@example.org")
                for recipient in (BLOCKED, OPEN):
                    sent = self.epoch
                    line = smtp.rcpt(recipient).line
                    self._record(Outcome(sent, self.epoch, worker, recipient, line))
                smtp.command("RSET")

    def _record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def during(self, epoch: str) -> list[Outcome]:
        """Replies to RCPTs sent and answered within ``epoch``."""
        with self.lock:
            return [o for o in self.outcomes if o.sent == o.answered == epoch]

    def besides(self, *epochs: str) -> list[Outcome]:
        """Every other reply: sent or answered in another epoch, or across a step."""
        with self.lock:
            return [o for o in self.outcomes if not o.sent == o.answered in epochs]

    def wait(self, epoch: str, count: int) -> None:
        wait_until(lambda: len(self.during(epoch)) >= count, f"{count} replies in epoch {epoch}")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(t.is_alive() for t in self.threads), "mail flow did not stop"


@pytest.fixture
def flow(postfix: PrivatePostfix) -> Iterator[MailFlow]:
    """A mail flow through the fail-closed "gate" listener; the test starts it."""
    mail = MailFlow(postfix.ports["gate"])
    try:
        yield mail
    finally:
        mail.stop()


def unexpected(outcomes: Sequence[Outcome], allowed: dict[str, set[str]]) -> list[Outcome]:
    return [o for o in outcomes if o.reply not in allowed.get(o.recipient, set())]


@pytest.fixture(scope="module")
def config(postgates: Postgates) -> Path:
    return postgates.config("flow", CONFIG.format(version=1))


@pytest.fixture(scope="module")
def table() -> list[Row]:
    """Rows for the generated "faults" block, filled by the tests in order."""
    return []


def start(postgates: Postgates, postfix: PrivatePostfix, config: Path) -> Daemon:
    return postgates.start(config, [Listener.tcp(postfix.policy_port)])


def log_lines(window: LogWindow, postfix: PrivatePostfix, pattern: str) -> str:
    """The matching log lines of the window, without time, host, pid, port and socket path."""
    lines = [ln for ln in window.lines() if re.search(pattern, ln)]
    port, socket_path = str(postfix.policy_port), str(postfix.policy_socket)
    clean = [
        re.sub(r"^.*? postfix/[\w/]+\[\d+\]: ", "", ln)
        .replace(port, "10040")
        .replace(socket_path, "/path/to/postgate.sock")
        for ln in lines
    ]
    return code("\n".join(dict.fromkeys(clean)))


def rcpt_open(postfix: PrivatePostfix, service: str) -> Reply:
    """MAIL FROM, then RCPT TO the open-relay test address on ``service``; the RCPT reply."""
    with SmtpSession(postfix.ports[service], Client()) as smtp:
        smtp.mail("s@example.org")
        return smtp.rcpt(OPEN)


class TestPostgateStopped:
    def test_fail_closed_service_answers_the_default_action(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """With nothing listening, Postfix retries once and answers its default_action."""
        mail_log.allow(REFUSED)
        reply = rcpt_open(postfix, "gate")
        assert default(OPEN) == reply.line
        effect = log_lines(mail_log, postfix, REFUSED)
        table.append(Row("not running (TCP)", code(DEFAULT_ACTION), code(reply.line), effect))

    def test_fail_open_service_lets_postfix_decide(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """With default_action=DUNNO the message is accepted and delivered without postgate."""
        mail_log.allow(REFUSED)
        token = new_token()
        with SmtpSession(postfix.ports["failopen"], Client()) as smtp:
            smtp.mail("s@example.org")
            reply = smtp.rcpt(OPEN)
            smtp.data(message(token))
        [delivered] = postfix.mailbox.wait(token, 1)
        expected = ("250 2.1.5 Ok", OPEN)
        assert expected == (reply.line, delivered["Delivered-To"])
        table.append(Row("not running", code("DUNNO"), code(reply.line), "(as above)"))

    def test_fail_open_still_refuses_relaying(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """Failing open hands relaying back to Postfix's reject_unauth_destination."""
        mail_log.allow(REFUSED)
        with SmtpSession(postfix.ports["failopen"], Client()) as smtp:
            smtp.mail("s@example.org")
            reply = smtp.rcpt("someone@elsewhere.example")
        expected = "554 5.7.1 <someone@elsewhere.example>: Relay access denied"
        assert expected == reply.line
        row = Row("not running, relay attempt", code("DUNNO"), code(reply.line), "(as above)")
        table.append(row)

    def test_unix_socket_missing_answers_the_default_action(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """A missing socket file is a connect failure like a refused TCP connection."""
        pattern = r"warning: (connect to|problem talking to server) \S+: No such file or directory"
        mail_log.allow(pattern)
        reply = rcpt_open(postfix, "unix")
        assert default(OPEN) == reply.line
        effect = log_lines(mail_log, postfix, pattern)
        row = Row("not running (UNIX socket)", code(DEFAULT_ACTION), code(reply.line), effect)
        table.append(row)

    def test_connection_closed_without_answer_answers_the_default_action(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """Closing without a reply (what postgate does on a protocol error) costs one retry."""
        pattern = r"warning: problem talking to server \S+"
        mail_log.allow(pattern)
        with ScriptedPolicy(("127.0.0.1", postfix.policy_port)) as server:
            server.answer = lambda _request: None
            reply = rcpt_open(postfix, "gate")
        assert (default(OPEN), 2) == (reply.line, len(server.requests))
        effect = log_lines(mail_log, postfix, pattern)
        case = "closes the connection without an answer"
        table.append(Row(case, code(DEFAULT_ACTION), code(reply.line), effect))

    def test_socket_without_permission_answers_the_default_action(
        self,
        postfix: PrivatePostfix,
        postgates: Postgates,
        config: Path,
        mail_log: LogWindow,
        table: list[Row],
    ) -> None:
        """A socket the postfix user may not open fails like a missing one."""
        pattern = r"warning: (connect to|problem talking to server) \S+: Permission denied"
        mail_log.allow(pattern)
        daemon = postgates.start(config, [Listener.unix(postfix.policy_socket, mode="600")])
        reply = rcpt_open(postfix, "unix")
        daemon.stop()
        assert default(OPEN) == reply.line
        effect = log_lines(mail_log, postfix, pattern)
        row = Row("socket mode 600, owned by root", code(DEFAULT_ACTION), code(reply.line), effect)
        table.append(row)

    def test_server_that_never_answers_times_out_into_the_default_action(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """A hung server costs timeout x try_limit + retry_delay, then the default applies."""
        pattern = r"warning: problem talking to server \S+: Connection timed out"
        mail_log.allow(pattern)
        hang = threading.Event()

        def answer_too_late(_request: Mapping[str, str]) -> None:
            hang.wait(WAIT)  # then hang up: Postfix gave up long ago

        with ScriptedPolicy(("127.0.0.1", postfix.policy_port)) as server:
            server.answer = answer_too_late
            reply = rcpt_open(postfix, "short")
            hang.set()
        assert (default(OPEN), 2) == (reply.line, len(server.requests))
        case = "accepts, never answers (`timeout=1s`)"
        effect = log_lines(mail_log, postfix, pattern)
        table.append(Row(case, code(DEFAULT_ACTION), code(reply.line), effect))

    def test_unknown_action_from_another_server_is_a_configuration_error(
        self, postfix: PrivatePostfix, mail_log: LogWindow, table: list[Row]
    ) -> None:
        """What a server that answers a bare word causes (postgate refuses such actions)."""
        pattern = r"warning: unknown smtpd restriction: \S+"
        mail_log.allow(pattern)
        with ScriptedPolicy(("127.0.0.1", postfix.policy_port)) as server:
            server.answer = lambda _request: "BLOCK"
            reply = rcpt_open(postfix, "gate")
        assert "451 4.3.5 Server configuration error" == reply.line
        case = "another server answers `BLOCK`"
        effect = log_lines(mail_log, postfix, pattern)
        table.append(Row(case, code(DEFAULT_ACTION), code(reply.line), effect))


class TestRestart:
    def test_mail_flowing_through_a_restart_gets_only_right_or_default_answers(
        self,
        postfix: PrivatePostfix,
        postgates: Postgates,
        config: Path,
        flow: MailFlow,
        mail_log: LogWindow,
        table: list[Row],
    ) -> None:
        """While postgate is down clients get the default; before and after, postgate's answer."""
        mail_log.allow(REFUSED)
        daemon = start(postgates, postfix, config)
        flow.start().wait("before", 12)
        flow.epoch = "down"
        daemon.stop()
        wait_until(lambda: any(o.reply.startswith("451") for o in flow.during("down")), "a 451")
        daemon = start(postgates, postfix, config)
        flow.epoch = "back"
        flow.wait("back", 24)
        flow.stop()
        daemon.stop()
        right = {BLOCKED: {blocked(1)}, OPEN: {"250 2.1.5 Ok"}}
        either = {r: right[r] | {default(r)} for r in right}
        wrong = unexpected(flow.during("before"), right) + unexpected(flow.during("back"), right)
        nothing: tuple[list[Outcome], list[Outcome]] = ([], [])
        assert nothing == (wrong, unexpected(flow.besides("before", "back"), either))
        seen = "postgate's replies; while it is down, the default action's; then postgate's again"
        case = "restarted while 3 SMTP clients send"
        table.append(Row(case, code(DEFAULT_ACTION), seen, "(as above, while down)"))


class TestReload:
    def test_sighup_while_mail_flows_fails_no_request(
        self,
        postfix: PrivatePostfix,
        postgates: Postgates,
        config: Path,
        flow: MailFlow,
        table: list[Row],
    ) -> None:
        """Every reply is the old or the new rule's, each client sees old then new, never 451."""
        config.write_text(CONFIG.format(version=1))
        daemon = start(postgates, postfix, config)
        flow.start().wait("before", 12)
        config.write_text(CONFIG.format(version=2))
        flow.epoch = "reloading"
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log('"event":"config_reloaded"')
        flow.epoch = "after"
        flow.wait("after", 24)
        flow.stop()
        daemon.stop()
        old = {BLOCKED: {blocked(1)}, OPEN: {"250 2.1.5 Ok"}}
        new = {BLOCKED: {blocked(2)}, OPEN: {"250 2.1.5 Ok"}}
        both = {r: old[r] | new[r] for r in old}
        wrong = unexpected(flow.during("before"), old) + unexpected(flow.during("after"), new)
        wrong += unexpected(flow.besides("before", "after"), both)
        nothing: tuple[list[Outcome], list[Outcome]] = ([], [])
        assert nothing == (wrong, went_back(flow.outcomes))
        case = "SIGHUP (reload) while 3 SMTP clients send"
        seen = "the old rule's reply, then the new rule's; no request failed"
        table.append(Row(case, code(DEFAULT_ACTION), seen, "(nothing)"))

    def test_broken_config_on_sighup_keeps_the_old_rules_answering(
        self, postfix: PrivatePostfix, postgates: Postgates, config: Path, table: list[Row]
    ) -> None:
        """A reload that fails keeps serving: Postfix sees the old answers, no failure."""
        config.write_text(CONFIG.format(version=3))
        daemon = start(postgates, postfix, config)
        config.write_text(CONFIG.format(version=4) + "\n[[rules]]\nid = 7\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log('"event":"config_reload_failed"')
        with SmtpSession(postfix.ports["gate"], Client()) as smtp:
            smtp.mail("s@example.org")
            reply = smtp.rcpt(BLOCKED)
        daemon.stop()
        assert blocked(3) == reply.line
        case = "SIGHUP with a broken config"
        table.append(Row(case, code(DEFAULT_ACTION), code(reply.line), "(nothing)"))


def went_back(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Replies of a worker that show version 1 after the same worker saw version 2."""
    seen_new: set[int] = set()
    back = []
    for o in outcomes:
        if o.reply == blocked(2):
            seen_new.add(o.worker)
        elif o.reply == blocked(1) and o.worker in seen_new:
            back.append(o)
    return back


def test_faults_table_in_docs_is_what_postfix_did(table: list[Row]) -> None:
    """docs/postfix.md's fault table is exactly the rows these tests observed."""
    ran = len(table)
    assert FAULT_ROWS == ran, f"only {ran} of {FAULT_ROWS} fault tests passed; run the whole module"
    columns = ("postgate", "Postfix `default_action`", "SMTP client sees", "Postfix mail log")
    rendered = render(table, columns)
    assert rendered == sync("faults", rendered), stale_hint("faults")
