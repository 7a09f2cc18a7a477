"""An SMTP client for the private Postfix: XCLIENT identities and replies as lines.

Tests compare what the SMTP client sees, so a `Reply` keeps the code and text
exactly as smtplib received them, and `SmtpSession` never raises for a
refusal: a refused DATA is a reply like any other.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from tests.support.waiting import WAIT

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class Client:
    """Who the SMTP client claims to be; presented to Postfix with XCLIENT.

    ``name`` is the verified client name (``[UNAVAILABLE]`` makes Postfix
    send ``unknown``), ``reverse_name`` the unverified PTR name, ``login``
    becomes ``sasl_username`` (Postfix 3.7 XCLIENT LOGIN, sasl_method=XCLIENT).
    """

    addr: str = "192.0.2.10"
    name: str = "mail.client.example"
    reverse_name: str = "mail.client.example"
    helo: str = "mail.client.example"
    login: str = ""

    def xclient(self) -> str:
        addr = f"IPV6:{self.addr}" if ":" in self.addr else self.addr
        parts = [f"ADDR={addr}", f"NAME={self.name}", f"REVERSE_NAME={self.reverse_name}"]
        if self.login:
            parts.append(f"LOGIN={self.login}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply as the client sees it."""

    code: int
    text: str

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def stable(self) -> str:
        """The line with the queue id replaced, for comparisons across runs."""
        return re.sub(r"queued as [0-9A-F]+", "queued as <id>", self.line)

    @property
    def queue_id(self) -> str:
        found = re.search(r"queued as ([0-9A-F]+)", self.text)
        return found.group(1) if found else ""


def _reply(pair: tuple[int, bytes | str]) -> Reply:
    code, text = pair
    return Reply(code, text.decode(errors="replace") if isinstance(text, bytes) else text)


class SmtpSession:
    """An smtplib session to one of the instance's smtpd listeners, as ``client``."""

    def __init__(self, port: int, client: Client, tls: ssl.SSLContext | None = None) -> None:
        self.smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="harness", timeout=WAIT)
        self.smtp.ehlo()
        reply = _reply(self.smtp.docmd("XCLIENT", client.xclient()))
        assert reply.code == 220, f"XCLIENT {client.xclient()} refused: {reply.line}"
        self._ehlo(client.helo)
        if tls is not None:
            self.smtp.starttls(context=tls)
            self._ehlo(client.helo)

    def _ehlo(self, helo: str) -> None:
        self.smtp.ehlo_resp = None
        code, _ = self.smtp.ehlo(helo)
        assert code == 250

    def mail(self, sender: str, size: int | None = None) -> Reply:
        options = [f"SIZE={size}"] if size is not None else []
        return _reply(self.smtp.mail(sender, options))

    def rcpt(self, recipient: str) -> Reply:
        return _reply(self.smtp.rcpt(recipient))

    def data(self, message: bytes) -> Reply:
        try:
            return _reply(self.smtp.data(message))
        except smtplib.SMTPDataError as exc:  # DATA itself refused (smtpd_data_restrictions)
            return _reply((exc.smtp_code, exc.smtp_error))

    def command(self, verb: str, args: str = "") -> Reply:
        return _reply(self.smtp.docmd(verb, args))

    def close(self) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.smtp.quit()
        self.smtp.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def new_token() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def message(token: str, subject: str = "postgate integration test", body_bytes: int = 0) -> bytes:
    """An RFC 5322 message carrying ``token``, its body padded to at least ``body_bytes``."""
    head = (
        f"From: sender@example.org\r\nSubject: {subject}\r\nX-Test-Token: {token}\r\n"
        f"Message-ID: <{token}@harness.postgate.test>\r\n\r\n"
    )
    line = b"x" * 998 + b"\r\n"
    return head.encode() + b"body\r\n" + line * -(-body_bytes // len(line))  # rounded up


def transaction(
    smtp: SmtpSession,
    sender: str,
    recipients: Sequence[str],
    content: bytes | None = None,
    size: int | None = None,
) -> list[Reply]:
    """MAIL, every RCPT, then DATA with ``content`` if given and a recipient was accepted.

    Returns every reply in order; the last one is what decided the transaction.
    """
    replies = [smtp.mail(sender, size)]
    replies += [smtp.rcpt(r) for r in recipients]
    if content is not None and any(r.code == 250 for r in replies[1:]):
        replies.append(smtp.data(content))
    return replies


def client_tls(directory: Path | None) -> ssl.SSLContext:
    """STARTTLS, presenting the harness's client certificate found in ``directory`` if given.

    The server's certificate is not verified: it is the private instance's own.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if directory is not None:
        ctx.load_cert_chain(directory / "client.crt", directory / "client.key")
    return ctx
