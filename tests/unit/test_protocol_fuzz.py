"""Property tests of the codec: h11's invariant and encode/decode round trips.

Any bytes, fed whole, byte by byte or in random chunks, give the same requests
or a `ProtocolError`, and never any other exception. "The same requests" is
checked against a second, deliberately naive decoder that reads one line at a
time, exactly as docs/protocol.md (Framing) words the framing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from postgate.wire.codec import (
    REQUEST_NAME,
    Decoder,
    EncodeError,
    Limits,
    ProtocolError,
    encode,
    encode_request,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

Attrs = dict[str, str]

TIGHT = Limits(max_line=32, max_request=120, max_attributes=5)
LIMITS = st.sampled_from([Limits(), TIGHT, Limits(max_line=28, max_request=64, max_attributes=2)])


@dataclass(frozen=True)
class Outcome:
    """What one way of feeding a stream produced."""

    requests: list[Attrs]
    failed: bool
    pending: int


def feed(limits: Limits, chunks: Iterable[bytes]) -> Outcome:
    """Feed chunks in order, stopping at the first ProtocolError; any other exception escapes."""
    decoder = Decoder(limits)
    requests: list[Attrs] = []
    try:
        for chunk in chunks:
            requests += [r.as_dict() for r in decoder.feed(chunk)]
    except ProtocolError:
        return Outcome(requests, failed=True, pending=decoder.pending)
    return Outcome(requests, failed=False, pending=decoder.pending)


def cut(stream: bytes, sizes: list[int]) -> list[bytes]:
    """Cut the stream into chunks whose sizes cycle through ``sizes``."""
    chunks, start, turn = [], 0, 0
    while start < len(stream):
        size = sizes[turn % len(sizes)]
        chunks.append(stream[start : start + size])
        start, turn = start + size, turn + 1
    return chunks


def naive(limits: Limits, stream: bytes) -> Outcome:
    """Decode one line at a time, the slow obvious way, as docs/protocol.md (Framing) words it."""
    requests: list[Attrs] = []
    lines: list[bytes] = []
    size = pos = 0
    while (lf := stream.find(b"\n", pos)) >= 0:
        raw, pos = stream[pos:lf], lf + 1
        size += len(raw) + 1
        line = raw.removesuffix(b"\r")
        if len(line) > limits.max_line:  # known as soon as the line ends
            return Outcome(requests, failed=True, pending=0)
        if line:
            lines.append(line)
            continue
        attrs = naive_request(limits, lines, size)
        if attrs is None:
            return Outcome(requests, failed=True, pending=0)
        requests.append(attrs)
        lines, size = [], 0
    tail = len(stream) - pos
    # An incomplete request fails as soon as it cannot fit; one byte of slack
    # on the line, which may turn out to be the CR before its LF.
    failed = size + tail > limits.max_request or tail > limits.max_line + 1
    return Outcome(requests, failed=failed, pending=0 if failed else size + tail)


def naive_request(limits: Limits, lines: list[bytes], size: int) -> Attrs | None:
    if not lines or size > limits.max_request or len(lines) > limits.max_attributes:
        return None
    attrs: Attrs = {}
    for line in lines:
        name, sep, value = line.partition(b"=")
        if not sep or not name:
            return None
        attrs[name.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return attrs if attrs.get("request") == REQUEST_NAME else None


# Hostile but mostly well-formed streams: requests with nasty values, either
# all well-formed or salted with the mistakes a broken or malicious peer makes.
NO_LF = st.binary(max_size=30).map(lambda raw: raw.replace(b"\n", b""))
NAMES = st.sampled_from([b"sender", b"helo_name", b"request", b"x", b"\xc3("])
VALUES = NO_LF | st.sampled_from(
    [b"", b"=", b"a=b", b"\r", b"\xff\xfe", b"caf\xc3\xa9", b"\0", b"v" * 29, b"v" * 30, b"v" * 31]
)
GOOD_LINES = st.builds(lambda name, value: name + b"=" + value, NAMES | NO_LF.filter(bool), VALUES)
SAFE_LINES = st.builds(lambda name, value: name + b"=" + value, NAMES, VALUES)
BAD_LINES = st.sampled_from([b"garbage", b"=x", b"request=other", b"\r", b"x" * 40])
EOLS = st.sampled_from([b"\n", b"\n", b"\r\n"])


@st.composite
def requests(draw: st.DrawFn, lines: st.SearchStrategy[bytes], ends: list[bytes]) -> bytes:
    """One request, its request line first or last."""
    request = [b"request=smtpd_access_policy", *draw(st.lists(lines, max_size=6))]
    if draw(st.booleans()):
        request.reverse()
    eol = draw(EOLS)
    return eol.join(request) + eol + draw(st.sampled_from(ends))


def streams(requests: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A few requests, then a little junk, or cut anywhere: a request still arriving."""
    return st.builds(
        lambda parts, tail, keep: (b"".join(parts) + tail)[:keep],
        st.lists(requests, max_size=5),
        st.binary(max_size=8),
        st.none() | st.integers(min_value=0, max_value=600),
    )


WELL_FORMED = requests(SAFE_LINES, [b"\n", b"\r\n"])
# Mostly good lines; the empty line rarely doubled or missing.
SALTED = requests(st.one_of(*[GOOD_LINES] * 7, BAD_LINES), [b"\n"] * 6 + [b"\r\n", b"\n\n", b""])
STREAMS = streams(WELL_FORMED) | streams(SALTED)
SIZES = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8)


def check_invariant(limits: Limits, stream: bytes, sizes: list[int]) -> None:
    expected = naive(limits, stream)
    whole = feed(limits, [stream])
    byte_by_byte = feed(limits, cut(stream, [1]))
    chunked = feed(limits, cut(stream, sizes))
    if not expected.failed:
        assert [expected] * 3 == [whole, byte_by_byte, chunked]
        return
    # A failing feed drops what it completed, so bigger chunks may deliver a
    # shorter prefix of the good requests; byte by byte delivers them all.
    assert [True, True, True] == [whole.failed, byte_by_byte.failed, chunked.failed]
    assert expected.requests == byte_by_byte.requests
    for outcome in (whole, chunked):
        assert outcome.requests == expected.requests[: len(outcome.requests)]


# No deadlines: a slow or busy machine must not fail a test (no timed tests).


class TestChunkingInvariant:
    @settings(max_examples=300, deadline=None)
    @given(LIMITS, st.binary(max_size=300), SIZES)
    @example(Limits(), b"request=smtpd_access_policy\n\n", [1])
    def test_any_bytes_give_the_same_requests_or_protocol_error(
        self, limits: Limits, stream: bytes, sizes: list[int]
    ) -> None:
        """Random bytes decode alike in any chunking, or fail alike with ProtocolError only."""
        check_invariant(limits, stream, sizes)

    @settings(max_examples=500, deadline=None)
    @given(LIMITS, STREAMS, SIZES)
    @example(TIGHT, b"request=smtpd_access_policy\n" + b"a=" + b"b" * 30 + b"\r\n\r\n", [60])
    @example(TIGHT, b"request=smtpd_access_policy\nx=\r\n\r\r\n", [1])
    @example(TIGHT, b"request=smtpd_access_policy\n\n\r\n", [29])
    @example(TIGHT, b"request=smtpd_access_policy\nx=" + b"v" * 31 + b"\nx=", [99])
    @example(TIGHT, b"request=smtpd_access_policy\nx=" + b"v" * 31 + b"\n\n", [99])
    @example(
        TIGHT, b"request=smtpd_access_policy\n" + (b"x=" + b"v" * 28 + b"\n") * 3 + b"\n", [999]
    )
    def test_hostile_request_streams_give_the_same_requests_or_protocol_error(
        self, limits: Limits, stream: bytes, sizes: list[int]
    ) -> None:
        """Nearly valid streams with hostile values decode alike in any chunking, or fail alike."""
        check_invariant(limits, stream, sizes)


# Attribute names Postfix could send: non-empty, no "=", LF or NUL; values: no
# LF or NUL. A value may end in CR: the encoder protects it from the stray-CR rule.
SAFE_NAMES = st.text(min_size=1, max_size=12).filter(
    lambda s: not {"=", "\n", "\0"} & set(s) and s != "request"
)
RAW_VALUES = st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape"))
SAFE_VALUES = (st.text(max_size=20) | RAW_VALUES).filter(lambda s: not {"\n", "\0"} & set(s))


# Any text, weighted toward the troublemakers: framing bytes, lone surrogates,
# and escapes of bytes that together spell valid UTF-8.
ANY_TEXT = st.lists(
    st.sampled_from("a=\r\n\0 é\ud800\udcc3\udca9") | st.characters(exclude_categories=()),
    max_size=5,
).map("".join)


class TestRoundTrip:
    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(SAFE_NAMES, SAFE_VALUES, max_size=12), SIZES)
    def test_encoded_request_decodes_to_the_same_attributes(
        self, attrs: Attrs, sizes: list[int]
    ) -> None:
        """encode_request then Decoder gives back exactly the attributes, in any chunking."""
        attrs = {"request": REQUEST_NAME, **attrs}
        wire = encode_request(attrs)
        assert Outcome([attrs], failed=False, pending=0) == feed(Limits(), cut(wire, sizes))

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=4))
    @example({"a": "b\r"})
    @example({"a": "\udcc3\udca9"})
    def test_encode_request_frames_exactly_what_reads_back(self, attrs: Attrs) -> None:
        """Any mapping is framed so that it reads back, or refused with EncodeError if it cannot."""
        attrs = {"request": REQUEST_NAME, **attrs}
        if all(framable(name, value) for name, value in attrs.items()):
            assert [attrs] == [r.as_dict() for r in Decoder().feed(encode_request(attrs))]
        else:
            with pytest.raises(EncodeError):
                encode_request(attrs)

    @settings(max_examples=300, deadline=None)
    @given(ANY_TEXT)
    @example("REJECT a\rb")
    def test_encode_frames_exactly_the_sendable_text(self, text: str) -> None:
        """A reply is exactly one action line, or EncodeError for text Postfix would misread."""
        if sendable(text):
            assert b"action=" + text.encode() + b"\n\n" == encode(text)
        else:
            with pytest.raises(EncodeError):
                encode(text)


def framable(name: str, value: str) -> bool:
    """What Postfix could send (docs/protocol.md, Framing), and would read back as given."""
    line = f"{name}={value}"
    try:
        raw = line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that escapes no byte
        return False
    return (
        name != ""
        and not {"=", "\n", "\0"} & set(name)
        and not {"\n", "\0"} & set(value)
        and raw.decode("utf-8", "surrogateescape") == line
    )


def sendable(text: str) -> bool:
    """Reply text Postfix reads as written: not blank, one line, no NUL, valid UTF-8.

    docs/protocol.md, Replies.
    """
    return (
        text.strip() != ""
        and not {"\r", "\n", "\0"} & set(text)
        and not any("\ud800" <= char <= "\udfff" for char in text)
    )
