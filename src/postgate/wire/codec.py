"""Sans-IO codec for the Postfix policy delegation protocol.

Owns framing, byte limits and the wire form of requests and replies; imports
no Twisted and touches no socket or clock, so it is tested at byte level and
fuzzed (docs/protocol.md, Requests and Replies). The shape follows h11: bytes go in through
`Decoder.feed`, complete requests come out; anything the peer can do wrong
surfaces as one `ProtocolError`, and our own misuse as `EncodeError`.

Framing, as the decoder reads it (docs/protocol.md, Framing): lines end at LF,
and one CR right before the LF is dropped; an empty line ends a request; each
other line splits at its first ``=`` into a non-empty name and a value. The
decoder is chunking-invariant: any split of the same bytes into `feed` calls
yields the same requests, or a `ProtocolError` in every split (a failing
`feed` drops the requests it completed, so bigger chunks deliver fewer).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

REQUEST_NAME: Final = "smtpd_access_policy"

_END: Final = b"\n\n"
# str.split's arguments for every line, so that map() splits them all in C.
_EQUALS: Final = itertools.repeat("=")
_ONCE: Final = itertools.repeat(1)
_CR_END: Final = b"\n\r\n"
_CR: Final = 13


class ProtocolError(Exception):
    """The peer sent something that is not a policy request.

    The connection's framing can no longer be trusted, so the only safe
    reaction is to log and close without a reply (docs/protocol.md, Connections).
    """


class EncodeError(ValueError):
    """We tried to send something Postfix would misread (CR, LF, NUL, empty)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Byte and count bounds on what one peer may make us buffer.

    ``max_line`` counts a line without its LF and without a CR before it.
    ``max_request`` counts a request as it is on the wire, line ends and the
    closing empty line included, so the same number also bounds the buffer
    while a request is still arriving. ``max_attributes`` counts lines, so
    repeats count too.
    """

    max_line: int = 16 * 1024
    max_request: int = 64 * 1024
    max_attributes: int = 256

    def __post_init__(self) -> None:
        for name in ("max_line", "max_request", "max_attributes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if not 0 < self.max_line <= self.max_request:
            raise ValueError("need 0 < max_line <= max_request")
        if self.max_attributes < 1:
            raise ValueError("max_attributes must be at least 1")


class PolicyRequest:
    """One decoded request: attribute names to values, read-only.

    A plain slotted class rather than a dataclass because it is built once per
    request on the hot path. Absent attributes read as ``""``, which is also
    how Postfix reports unavailable values (docs/protocol.md, Framing).
    """

    __slots__ = ("raw", "wire")

    def __init__(self, attrs: Mapping[str, str]) -> None:
        # The attribute dict itself, for hot-path readers (the rules, the
        # decision log): a slot, not a property, to spare a call. Never mutated.
        self.raw = dict(attrs)
        # The attribute lines as received (LF-separated, CR-LF folded, no
        # closing empty line); empty for requests not read from a peer.
        self.wire = b""

    def get(self, name: str, default: str = "") -> str:
        return self.raw.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self.raw[name]

    def __contains__(self, name: object) -> bool:
        return name in self.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self.raw.items())

    def as_dict(self) -> dict[str, str]:
        return dict(self.raw)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PolicyRequest):
            return self.raw == other.raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self.raw.items()))

    def __repr__(self) -> str:
        return f"PolicyRequest({self.raw!r})"


class Decoder:
    """Incremental request decoder for one connection.

    Feed it whatever the socket delivered; it returns the requests completed
    by those bytes. After a `ProtocolError` the decoder is dead and keeps
    raising: the caller is expected to drop the connection. Requests that
    completed in the same `feed` as the error are dropped with it, since no
    reply may follow garbage on that connection.
    """

    __slots__ = ("_buffer", "_dead", "_line", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._line = 0  # bytes since the last LF: the line still arriving
        self._dead = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete request held; non-zero means mid-request."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[PolicyRequest]:
        if self._dead:
            raise ProtocolError("decoder already failed")
        try:
            return self._feed(data)
        except ProtocolError:
            self._dead = True
            self._buffer = bytearray()
            raise

    def _feed(self, data: bytes) -> list[PolicyRequest]:
        limits = self.limits
        if (
            not self._buffer
            and len(data) <= limits.max_line
            and len(data) <= limits.max_request
            and data.endswith(b"\n\n")
            and data.find(b"\n\n") == len(data) - 2
            and data.find(b"\r") < 0
        ):
            # What Postfix sends: exactly one whole request per read, no CR.
            # Short enough that no line or request limit can be broken, so
            # the general path below would only confirm what is known.
            self._line = 0
            return [self._parse(data[:-2])]
        first_lf = data.find(b"\n")
        buffer = self._buffer
        if first_lf < 0:  # no line ended, so no request either
            self._line += len(data)
            self._check_partial(len(buffer) + len(data))
            buffer += data
            return []
        last_lf = data.rfind(b"\n")
        self._check_lines(data, first_lf, last_lf)
        self._line = len(data) - last_lf - 1
        if not buffer:  # the usual case: Postfix writes each request whole
            requests, used = self._split(data, 0)
            if used < len(data):
                self._check_partial(len(data) - used)
                buffer += memoryview(data)[used:]
            return requests
        # Resume the terminator search where the previous feed stopped (a
        # terminator is 3 bytes at most), so a request trickling in byte by
        # byte costs linear time, not quadratic (h11 _receivebuffer.py).
        resume = max(len(buffer) - 2, 0)
        buffer += data
        requests, used = self._split(buffer, resume)
        del buffer[:used]
        self._check_partial(len(buffer))
        return requests

    def _check_partial(self, size: int) -> None:
        # Refuse an incomplete request as soon as it cannot fit any more, so
        # a peer that never sends an empty line or a newline cannot make us
        # buffer more. One byte of slack on the line: it may be a CR.
        limits = self.limits
        if size > limits.max_request:
            raise ProtocolError(f"request longer than {limits.max_request} bytes")
        if self._line > limits.max_line + 1:
            raise ProtocolError(f"line longer than {limits.max_line} bytes")

    def _check_lines(self, data: bytes, first_lf: int, last_lf: int) -> None:
        # Check each line as it ends rather than each request, so that where
        # a feed happens to stop never changes the outcome. The line that was
        # already arriving ends at first_lf; a CR before its LF does not count.
        max_line = self.limits.max_line
        cr = data[first_lf - 1] == _CR if first_lf else self._buffer.endswith(b"\r")
        if self._line + first_lf - cr > max_line or (
            last_lf - first_lf > max_line + 1
            and _longest_line(data[first_lf + 1 : last_lf + 1]) > max_line
        ):
            raise ProtocolError(f"line longer than {max_line} bytes")

    def _split(self, buf: bytes | bytearray, resume: int) -> tuple[list[PolicyRequest], int]:
        """Decode every complete request in ``buf``; return them and the bytes used."""
        requests: list[PolicyRequest] = []
        ends = _Terminators(buf, resume)
        start = 0
        while (found := ends.after(start)) is not None:
            end, after = found
            if after - start > self.limits.max_request:
                raise ProtocolError(f"request longer than {self.limits.max_request} bytes")
            requests.append(self._parse(buf[start:end]))
            start = after
        return requests, start

    def _parse(self, block: bytes | bytearray) -> PolicyRequest:
        if not block:
            raise ProtocolError("empty line where a request should start")
        if block.find(b"\r") >= 0:
            block = block.replace(b"\r\n", b"\n")
        lines = block.decode("utf-8", "surrogateescape").split("\n")
        if len(lines) > self.limits.max_attributes:
            raise ProtocolError(f"more than {self.limits.max_attributes} attributes")
        # Split at the first "=", the last repeat wins (docs/protocol.md, Framing);
        # a line without "=" splits into one part, which dict() refuses.
        try:
            attrs = dict(map(str.split, lines, _EQUALS, _ONCE))
        except ValueError:
            raise ProtocolError(_bad_line(lines)) from None
        if "" in attrs:
            raise ProtocolError(_bad_line(lines))
        kind = attrs.get("request")
        if kind != REQUEST_NAME:
            raise ProtocolError(_not_policy(kind))
        request = PolicyRequest.__new__(PolicyRequest)
        request.raw = attrs  # the decoder owns attrs: no copy
        request.wire = bytes(block)
        return request


class _Terminators:
    """Finds where requests end: an LF, an optional CR, an LF.

    Each of the two needles is searched forward only, and a miss is final for
    the whole buffer, so one `feed` costs two linear scans however many
    requests it holds (a request ends at an empty line; a stray CR before an
    LF is tolerated).
    """

    __slots__ = ("_buf", "_cr_end", "_end")

    def __init__(self, buf: bytes | bytearray, resume: int) -> None:
        self._buf = buf
        self._end = buf.find(_END, resume)
        # Postfix never sends CR (docs/protocol.md, Framing): one quick scan usually
        # rules that form out.
        self._cr_end = buf.find(_CR_END, resume) if buf.find(b"\r", resume) >= 0 else -1

    def after(self, start: int) -> tuple[int, int] | None:
        """Return (end of the lines, start of the next request), or None."""
        buf = self._buf
        # An empty line right at the start is an empty request: let parsing refuse it.
        if buf.startswith(b"\n", start):
            return start, start + 1
        if buf.startswith(b"\r\n", start):
            return start, start + 2
        if 0 <= self._end < start:
            self._end = buf.find(_END, start)
        if 0 <= self._cr_end < start:
            self._cr_end = buf.find(_CR_END, start)
        end, cr_end = self._end, self._cr_end
        if cr_end >= 0 and (end < 0 or cr_end < end):
            end, after = cr_end, cr_end + 3
        elif end >= 0:
            after = end + 2
        else:
            return None
        # end > start here, since the line at start is not empty.
        return (end - 1 if buf[end - 1] == _CR else end), after


def _longest_line(lines: bytes) -> int:
    """Longest of these LF-ended lines, a CR before the LF not counted."""
    return max(map(len, lines.replace(b"\r\n", b"\n").split(b"\n")))


def _not_policy(kind: str | None) -> str:
    # `request` is always smtpd_access_policy (docs/protocol.md, Attributes).
    if kind is None:
        return "no request attribute"
    return f"request attribute {kind[:40]!r} is not {REQUEST_NAME!r}"


def _bad_line(lines: list[str]) -> str:
    """Name the first line that is not ``name=value``, for the log."""
    for number, line in enumerate(lines, 1):
        name, sep, _ = line.partition("=")
        if not sep:
            return f"attribute line {number} has no '='"
        if not name:
            return f"attribute line {number} has an empty name"
    return "attribute lines are not name=value"


def encode(action: str) -> bytes:
    """Frame one reply: exactly ``action=<text>\\n\\n`` (docs/protocol.md, Format).

    Refuses text that Postfix would misparse: an empty action is taken as OK,
    CR/LF break the framing, NUL truncates, and invalid UTF-8 makes Postfix
    apply its default action at once.
    """
    if not action or action.isspace():
        raise EncodeError("empty action: Postfix would read it as OK")
    if "\n" in action or "\r" in action or "\0" in action:
        raise EncodeError("action text contains CR, LF or NUL")
    try:
        raw = action.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError("action text is not valid UTF-8") from exc
    return b"action=" + raw + b"\n\n"


def encode_request(attrs: Mapping[str, str]) -> bytes:
    """Frame a request the way Postfix does; for clients, tests and replay.

    Every mapping it accepts reads back unchanged through `Decoder` (given
    ``request=smtpd_access_policy`` and room within the `Limits`). It
    refuses what Postfix never sends: a name that is empty or holds ``=``,
    LF or NUL anywhere (docs/protocol.md, Framing). Text decoded with
    surrogateescape encodes back to its original bytes; escapes that spell
    valid UTF-8 are refused, since they would read back as other text.
    """
    text = "".join([request_line(name, value) for name, value in attrs.items()]) + "\n"
    try:
        wire = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise EncodeError("attribute holds a surrogate that is not an escaped byte") from exc
    if wire.decode("utf-8", "surrogateescape") != text:
        raise EncodeError("attribute holds escaped bytes that would read back as other text")
    return wire


def request_line(name: str, value: str) -> str:
    """One ``name=value`` line that reads back as exactly this attribute.

    Public so the recorder writes request files line for line as the wire
    would carry them; `EncodeError` for what no line can carry.
    """
    if not name or "=" in name:
        raise EncodeError(f"attribute name {name!r} is empty or contains '='")
    if "\n" in name or "\0" in name or "\n" in value or "\0" in value:
        raise EncodeError(f"attribute {name!r} contains LF or NUL")
    # The decoder drops one CR before an LF, so a value ending in CR gets one more.
    return f"{name}={value}\r\n" if value.endswith("\r") else f"{name}={value}\n"
