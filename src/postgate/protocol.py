"""Sans-IO codec for the Postfix policy delegation protocol.

Owns framing, byte limits and the wire form of replies; imports no Twisted
and touches no socket or clock, so it is tested at byte level and fuzzed
(policy-protocol.md §2-§3). The shape follows h11: bytes go in through
`Decoder.feed`, complete requests come out; anything the peer can do wrong
surfaces as one `ProtocolError`, and our own misuse as `EncodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

REQUEST_NAME: Final = "smtpd_access_policy"


class ProtocolError(Exception):
    """The peer sent something that is not a policy request.

    The connection's framing can no longer be trusted, so the only safe
    reaction is to log and close without a reply (policy-protocol.md §1, §9).
    """


class EncodeError(ValueError):
    """We tried to send a reply Postfix would misread (CR, LF, NUL, empty)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Byte and count bounds on what one peer may make us buffer."""

    max_line: int = 16 * 1024
    max_request: int = 64 * 1024
    max_attributes: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.max_line <= self.max_request:
            raise ValueError("need 0 < max_line <= max_request")
        if self.max_attributes < 1:
            raise ValueError("max_attributes must be at least 1")


class PolicyRequest:
    """One decoded request: attribute names to values, read-only.

    A plain slotted class rather than a dataclass because it is built once per
    request on the hot path. Absent attributes read as ``""``, which is also
    how Postfix reports unavailable values (policy-protocol.md §2.1).
    """

    __slots__ = ("_attrs",)

    def __init__(self, attrs: Mapping[str, str]) -> None:
        self._attrs = dict(attrs)

    def get(self, name: str, default: str = "") -> str:
        return self._attrs.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self._attrs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._attrs

    def __iter__(self) -> Iterator[str]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._attrs.items())

    def as_dict(self) -> dict[str, str]:
        return dict(self._attrs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PolicyRequest):
            return self._attrs == other._attrs
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._attrs.items()))

    def __repr__(self) -> str:
        return f"PolicyRequest({self._attrs!r})"


def _decode(raw: bytes) -> str:
    # Values are client-controlled and may be SMTPUTF8 or garbage; keep every
    # byte recoverable instead of failing (policy-protocol.md §2.1).
    return raw.decode("utf-8", "surrogateescape")


class Decoder:
    """Incremental request decoder for one connection.

    Feed it whatever the socket delivered; it returns the requests completed
    by those bytes. After a `ProtocolError` the decoder is dead and keeps
    raising: the caller is expected to drop the connection.
    """

    __slots__ = ("_buffer", "_dead", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = b""
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
            self._buffer = b""
            raise

    def _feed(self, data: bytes) -> list[PolicyRequest]:
        buf = self._buffer + data if self._buffer else data
        requests: list[PolicyRequest] = []
        start = 0
        while True:
            end, skip = _find_blank_line(buf, start)
            if end < 0:
                break
            requests.append(self._parse_block(buf[start:end]))
            start = end + skip
        rest = buf[start:]
        self._check_partial(rest)
        self._buffer = rest
        return requests

    def _check_partial(self, rest: bytes) -> None:
        # An incomplete request must stay within both bounds while it grows,
        # so a peer that never sends a newline cannot make us buffer more.
        limits = self.limits
        if len(rest) > limits.max_request:
            raise ProtocolError(f"request longer than {limits.max_request} bytes")
        if len(rest) - (rest.rfind(b"\n") + 1) > limits.max_line:
            raise ProtocolError(f"line longer than {limits.max_line} bytes")

    def _parse_block(self, block: bytes) -> PolicyRequest:
        limits = self.limits
        if len(block) > limits.max_request:
            raise ProtocolError(f"request longer than {limits.max_request} bytes")
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        lines = block.split(b"\n")
        if len(lines) > limits.max_attributes:
            raise ProtocolError(f"more than {limits.max_attributes} attributes")
        attrs: dict[str, str] = {}
        for line in lines:
            if len(line) > limits.max_line:
                raise ProtocolError(f"line longer than {limits.max_line} bytes")
            name, sep, value = line.partition(b"=")
            if not sep or not name:
                raise ProtocolError("attribute line without a name=value form")
            attrs[_decode(name)] = _decode(value)
        kind = attrs.get("request")
        if kind != REQUEST_NAME:
            raise ProtocolError(f"request attribute is {kind!r}, not {REQUEST_NAME!r}")
        return PolicyRequest(attrs)


def _find_blank_line(buf: bytes, start: int) -> tuple[int, int]:
    """Return where the request ending at an empty line stops, and its length.

    The terminator is ``\\n\\n``; a stray CR before either LF is tolerated. A
    request is never empty, since ``request=`` is mandatory, so a blank line
    at ``start`` itself is a block with no attributes and fails in parsing.
    """
    if buf.startswith(b"\n", start):
        return start, 1
    if buf.startswith(b"\r\n", start):
        return start, 2
    best, skip = -1, 0
    for needle in (b"\n\n", b"\n\r\n"):
        found = buf.find(needle, start)
        if found >= 0 and (best < 0 or found < best):
            best, skip = found, len(needle)
    if best >= 0 and best > start and buf[best - 1 : best] == b"\r":
        return best - 1, skip + 1
    return best, skip


def encode(action: str) -> bytes:
    """Frame one reply: exactly ``action=<text>\\n\\n`` (policy-protocol.md §3).

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
    """Frame a request the way Postfix does; for clients, tests and replay."""
    parts = [f"{name}={value}\n" for name, value in attrs.items()]
    parts.append("\n")
    return "".join(parts).encode("utf-8", "surrogateescape")
