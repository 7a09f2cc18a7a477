"""One recorded request as a block of the request file format, redacted if asked.

The format is `postgate.wire.policy_files`'s, so a recording replays as is. Redaction
(``redact = true``) hides local parts in the request, and the ``# expect:``
line is rendered again from the redacted request with the action that
answered, so it equals what replay renders and quotes no address in any
form. A record without its action keeps its answer only when the answer
shows none of the hidden values (raw or as a reply would show them,
`sanitise`); else only ``# expect-rule:`` is written.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import math
import os
import secrets
from typing import TYPE_CHECKING, Final

from postgate.replies.parsing import parse_action
from postgate.replies.templates import ELLIPSIS, sanitise
from postgate.wire.codec import EncodeError, PolicyRequest, request_line

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.replies.model import Action

# Attributes holding an address or login whose local part identifies a person.
REDACTED: Final = ("sender", "recipient", "sasl_username", "sasl_sender")
KEY_BYTES: Final = 32


class KeyFileError(Exception):
    """The redaction key file cannot be used: recording with it would hide nothing."""


def format_time(now: float) -> str:
    """ISO-8601 in UTC with microseconds: readable in the file, unambiguous to replay."""
    whole = math.floor(now)
    micro = round((now - whole) * 1_000_000)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{_second(whole)}.{micro:06d}Z"


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    # Records come many per second; the calendar arithmetic is done once each.
    return dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Redactor:
    """Replaces local parts by a keyed hash: stable for a key, useless without it.

    The same address always becomes the same ``h-<12 hex>``, so rules and
    expectations that match repeated addresses or domains still replay; rules
    that name a local part of a redacted attribute no longer match. Nothing
    is cached: one HMAC is 1.5 µs, and a cache of senders is memory a
    client can fill.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def local(self, text: str) -> str:
        raw = text.encode("utf-8", "surrogateescape")
        return "h-" + hmac.digest(self._key, raw, "sha256").hex()[:12]

    def address(self, value: str) -> str:
        local, at, domain = value.rpartition("@")
        if not at:
            return self.local(value) if value else value
        return f"{self.local(local)}@{domain}" if local else value

    def apply(self, attrs: dict[str, str]) -> list[str]:
        """Redact ``attrs`` in place; return the values it hid."""
        hidden: list[str] = []
        for name in REDACTED:
            value = attrs.get(name)
            if value:
                redacted = self.address(value)
                if redacted != value:
                    attrs[name] = redacted
                    hidden.append(value)
        return hidden


def key_path(recording: Path) -> Path:
    return recording.with_name(recording.name + ".key")


def load_key(path: Path) -> bytes:
    """The redaction key kept beside the recording, created (0600) on first use.

    Created whole or not at all (written to a temporary file, fsynced, then
    linked into place): a full disk must not leave an empty key that every
    later start would use. A key of any other length is refused.
    """
    if not path.exists():
        _create_key(path)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        msg = f"{path}: {len(key)} bytes, not {KEY_BYTES}; remove it to make a new key"
        raise KeyFileError(msg)
    return key


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    temporary.unlink(missing_ok=True)  # left by a crash of this pid's predecessor
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # unlike rename, never replaces a key made meanwhile
        except FileExistsError:
            return
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        temporary.unlink(missing_ok=True)


class Format:
    """How the writer makes blocks under one configuration: the one block formatter."""

    def __init__(self, decisions: bool = True, redactor: Redactor | None = None) -> None:
        self.decisions, self.redactor = decisions, redactor

    def block(
        self, source: bytes | dict[str, str], answer: str, rule: str, now: float, action: str = ""
    ) -> bytes:
        """One request in the request file format, ending with its blank line.

        ``source`` is the received lines, or the attributes of a request not
        read from a peer; ``action`` (as configured) renders the answer again
        for a redacted request. Raises for a time `format_time` cannot write.
        """
        if isinstance(source, bytes) and self.redactor is None and _copyable(source):
            return self._head(answer, rule, now) + source + b"\n\n"
        attrs = dict(source) if isinstance(source, dict) else _attributes(source)
        expect: str | None = answer
        hidden = self.redactor.apply(attrs) if self.redactor is not None else None
        if hidden:
            expect = _redacted_answer(attrs, hidden, answer, rule, action)
        body = "".join(_lines(attrs)) + "\n"
        return self._head(expect, rule, now) + body.encode("utf-8", "surrogateescape")

    def _head(self, expect: str | None, rule: str, now: float) -> bytes:
        head = f"# time: {format_time(now)}\n"
        if self.decisions:
            head += f"# expect: {expect}\n" if expect is not None else ""
            head += f"# expect-rule: {rule}\n"
        return head.encode("utf-8", "surrogateescape")


# NUL, CR, '#', ASCII blanks (as str.strip sees them) and non-ASCII bytes become NUL.
_ODD: Final = bytes(
    0 if b in b"\0\r# \t\x0b\x0c\x1c\x1d\x1e\x1f" or b > 127 else b for b in range(256)
)


def _copyable(wire: bytes) -> bool:
    """Whether the received lines can be copied as they are: none of the bytes that could
    make a line read back otherwise (a name read as a comment, perhaps a forged ``# expect:``,
    or with outer blanks of any kind, which the reader refuses; a CR or NUL).

    Two C calls. A false "no" (a value holding a blank, a '#' or UTF-8) only costs
    the slower way of writing the same lines (`_lines`).
    """
    return b"\0" not in wire.translate(_ODD)


def _attributes(wire: bytes) -> dict[str, str]:
    """The attributes as the decoder read them from these lines (the last repeat wins)."""
    return dict(line.split("=", 1) for line in wire.decode("utf-8", "surrogateescape").split("\n"))


def _redacted_answer(
    attrs: dict[str, str], hidden: list[str], answer: str, rule: str, action: str
) -> str | None:
    """The answer replay gives the redacted request; None when it cannot be known safely."""
    if action:
        return _action(action).render(PolicyRequest(attrs), rule)
    shown = [value for value in hidden if value in answer or _sanitised(value) in answer]
    return None if shown else answer


@functools.lru_cache(maxsize=256)
def _action(line: str) -> Action:
    return parse_action(line).action


def _sanitised(value: str) -> str:
    """How a reply shows ``value``, minus the ellipsis of a cut value."""
    return sanitise(value).removesuffix(ELLIPSIS)


def _lines(attrs: dict[str, str]) -> list[str]:
    """The ``name=value`` lines, each as the wire carries it (`request_line`).

    A value ending in CR gets the extra CR the reader drops, so it reads back
    byte for byte. What no line can carry (NUL, a name with '=') is left out,
    like names that would read back as something else.
    """
    lines: list[str] = []
    for name, value in attrs.items():
        if _replayable(name):
            try:
                lines.append(request_line(name, value))
            except EncodeError:
                continue
    return lines


def _replayable(name: str) -> bool:
    """Whether `postgate.wire.policy_files` reads ``name=`` back as this attribute.

    A name starting with '#' would read back as a comment (or forge an
    expectation), one with outer blanks is refused; Postfix sends neither.
    """
    return name == name.strip() and not name.startswith("#")
