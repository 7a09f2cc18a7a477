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
import hashlib
import hmac
import math
import os
import secrets
from typing import TYPE_CHECKING, Final

from postgate.replies.actions import ELLIPSIS, sanitise
from postgate.rules.attributes import POSTFIX
from postgate.wire.codec import EncodeError, PolicyRequest, request_line

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from postgate.replies.actions import Action

# Attributes holding an address or login whose local part identifies a person.
REDACTED: Final = ("sender", "recipient", "sasl_username", "sasl_sender")
KEY_BYTES: Final = 32


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
    that name a local part of a redacted attribute no longer match.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._seen: dict[str, str] = {}

    def local(self, text: str) -> str:
        hashed = self._seen.get(text)
        if hashed is None:
            raw = text.encode("utf-8", "surrogateescape")
            hashed = "h-" + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:12]
            if len(self._seen) > 100_000:
                self._seen.clear()
            self._seen[text] = hashed
        return hashed

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


def load_key(path: Path) -> bytes:
    """The redaction key kept beside the recording, created (0600) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
    return path.read_bytes()


def key_path(recording: Path) -> Path:
    return recording.with_name(recording.name + ".key")


def format_block(  # noqa: PLR0913 - one record's fields and the settings shaping it
    request: PolicyRequest,
    answer: str,
    rule: str,
    now: float,
    *,
    decisions: bool = True,
    redactor: Redactor | None = None,
    action: Action | None = None,
) -> str:
    """One request in the request file format, ending with its blank line.

    ``action`` is what answered; with a ``redactor`` it renders the expected
    answer from the redacted request (see the module docstring).
    """
    attrs = request.as_dict()
    expect: str | None = answer
    if redactor is not None:
        hidden = redactor.apply(attrs)
        if hidden:
            expect = _redacted_answer(attrs, hidden, answer, rule, action)
    head = f"# time: {format_time(now)}\n"
    if decisions:
        head += f"# expect: {expect}\n" if expect is not None else ""
        head += f"# expect-rule: {rule}\n"
    return head + "".join(_lines(attrs)) + "\n"


def encode_block(  # noqa: PLR0913 - the same fields as format_block
    request: PolicyRequest,
    answer: str,
    rule: str,
    now: float,
    *,
    decisions: bool = True,
    redactor: Redactor | None = None,
    action: Action | None = None,
) -> bytes:
    """`format_block` as bytes, copying the received lines where that is exact.

    Without redaction, a request whose received lines read back as the same
    attributes is written as it came, which spares the line-by-line
    formatting: this runs on the thread that answers Postfix.
    """
    if redactor is None and copyable(request):
        return copy_block(request, answer, rule, now, decisions=decisions)
    text = format_block(
        request, answer, rule, now, decisions=decisions, redactor=redactor, action=action
    )
    return text.encode("utf-8", "surrogateescape")


def copyable(request: PolicyRequest) -> bool:
    """Whether the received lines read back as exactly these attributes.

    Not when a name would read as a comment (and so perhaps a forged
    ``# expect:``) or has outer blanks, nor with a NUL or a CR anywhere:
    such requests take the line-by-line path, which leaves those attributes
    out (see `_lines`). Names are checked, not the bytes, since a value may
    hold blanks or '#'; `CopiedBlocks` skips this when the bytes hold none.
    """
    wire = request.wire
    if not wire or 0 in wire or 13 in wire:  # NUL, CR: an int is one memchr
        return False
    names = request.raw.keys()
    if names <= _POSTFIX_NAMES:  # what Postfix sends: one set test, done in C
        return True
    for name in names:  # noqa: SIM110 - per request: no generator
        if name[0] in "# \t" or name[-1] in " \t":
            return False
    return True


_POSTFIX_NAMES: Final = frozenset(POSTFIX)
_COMMENTS_KEPT: Final = 4096
_END: Final = b"\n\n"
# A count of microseconds as text, three digits at a time: two tuple reads
# cost less than formatting an int on every record.
_DIGITS: Final = tuple(b"%03d" % n for n in range(1000))


class CopiedBlocks:
    """Builds `copy_block`'s bytes from received lines known copyable, from caches.

    The same bytes as `copy_block`, made cheaper because they are made for
    every record (`Recorder._encode`): the date and time of day are
    formatted once a second, the comment lines once per answer of each rule
    (most rules always answer the same). Which lines are copyable is the
    caller's to know (`copyable`, or the memchr calls of `Recorder.add`).
    """

    __slots__ = ("_comments", "_second", "decisions")

    def __init__(self, *, decisions: bool = True) -> None:
        self.decisions = decisions
        # The current second as a float, and its '# time: ' line up to the
        # microseconds; one tuple, so the two always belong together.
        self._second = (0.0, _time_prefix(0))
        self._comments: dict[str, tuple[str, bytes]] = {}

    def of(self, wire: bytes, answer: str, rule: str, now: float) -> bytes | None:
        """The block of lines known `copyable`; None when the time needs `format_time`."""
        start, prefix = self._second
        if not 0.0 <= now - start < 1.0:  # another second (or NaN)
            moved = self._move(now)
            if moved is None:
                return None
            start, prefix = moved
        # start is floor(now) as a float: format_time's arithmetic, bit for bit.
        micro = round((now - start) * 1_000_000)
        if micro == 1_000_000:  # rounds up into the next second: leave it to format_time
            return None
        known = self._comments.get(rule)
        if known is None or known[0] != answer:
            known = self._comment(answer, rule)
        high, low = _DIGITS[micro // 1000], _DIGITS[micro % 1000]
        return b"".join((prefix, high, low, b"Z\n", known[1], wire, b"\n\n"))

    def block(self, wire: bytes, answer: str, rule: str, now: float) -> bytes:
        """`of`, or `copy_wire` for a time `of` leaves to `format_time` (which raises
        for a time it cannot write)."""
        block = self.of(wire, answer, rule, now)
        if block is None:  # rounds up into the next second, or no time at all
            block = copy_wire(wire, answer, rule, now, decisions=self.decisions)
        return block

    def extend(
        self,
        parts: list[bytes],
        wires: Sequence[bytes],
        answers: Sequence[str],
        rules: Sequence[str],
        times: Sequence[float],
    ) -> None:
        """Append the blocks of many records of copyable lines to ``parts``, in pieces.

        `of` for a whole push of the daemon (`Recorder._encode`), with no
        call and no join per record. A time that is not one `format_time`
        writes raises, as it does there.
        """
        start, prefix = self._second
        comments = self._comments
        digits = _DIGITS
        add = parts.extend
        for wire, answer, rule, now in zip(wires, answers, rules, times, strict=True):
            if not 0.0 <= now - start < 1.0:  # another second (or NaN)
                moved = self._move(now)
                if moved is None:  # NaN, infinite, beyond datetime: the caller checks
                    msg = f"no time to write for {now!r}"
                    raise ValueError(msg)
                start, prefix = moved
            micro = round((now - start) * 1_000_000)
            known = comments.get(rule)
            if micro == 1_000_000 or known is None or known[0] != answer:
                parts.append(self.block(wire, answer, rule, now))
                continue
            add((prefix, digits[micro // 1000], digits[micro % 1000], b"Z\n", known[1], wire, _END))

    def _move(self, now: float) -> tuple[float, bytes] | None:
        """The second ``now`` is in, its prefix formatted once; None when it has none."""
        try:
            whole = math.floor(now)
            second = (float(whole), _time_prefix(whole))
        except (ValueError, OverflowError, OSError):  # NaN, infinite, beyond datetime
            return None
        self._second = second
        return second

    def _comment(self, answer: str, rule: str) -> tuple[str, bytes]:
        text = f"# expect: {answer}\n# expect-rule: {rule}\n" if self.decisions else ""
        if len(self._comments) >= _COMMENTS_KEPT:  # rule names of many reloads
            self._comments.clear()
        comments = self._comments[rule] = (answer, text.encode("utf-8", "surrogateescape"))
        return comments


def _time_prefix(whole: int) -> bytes:
    return f"# time: {_second(whole)}.".encode()


def copy_block(
    request: PolicyRequest, answer: str, rule: str, now: float, *, decisions: bool = True
) -> bytes:
    """The block of a `copyable` request: its comment lines, then its lines as received."""
    return copy_wire(request.wire, answer, rule, now, decisions=decisions)


def copy_wire(wire: bytes, answer: str, rule: str, now: float, *, decisions: bool = True) -> bytes:
    """`copy_block` from the received lines alone."""
    head = f"# time: {format_time(now)}\n"
    if decisions:
        head += f"# expect: {answer}\n# expect-rule: {rule}\n"
    return head.encode("utf-8", "surrogateescape") + wire + b"\n\n"


def _redacted_answer(
    attrs: dict[str, str], hidden: list[str], answer: str, rule: str, action: Action | None
) -> str | None:
    """The answer replay gives the redacted request; None when it cannot be known safely."""
    if action is not None:
        return action.render(PolicyRequest(attrs), rule)
    shown = [value for value in hidden if value in answer or _sanitised(value) in answer]
    return None if shown else answer


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
        if name in _SAFE_NAMES or _replayable(name):
            try:
                lines.append(request_line(name, value))
            except EncodeError:
                continue
    return lines


# Attribute names already known to read back as themselves: Postfix sends the
# same few dozen, so the check below runs once per name, not per record.
_SAFE_NAMES: set[str] = set()
_MAX_SAFE_NAMES: Final = 1024


def _replayable(name: str) -> bool:
    """Whether `postgate.wire.policy_files` reads ``name=`` back as this attribute.

    A name starting with '#' would read back as a comment (or forge an
    expectation), one with outer blanks is refused; Postfix sends neither, so
    such attributes are left out rather than making the recording unreadable.
    """
    if name != name.strip() or name.startswith("#"):
        return False
    if len(_SAFE_NAMES) < _MAX_SAFE_NAMES:
        _SAFE_NAMES.add(name)
    return True
