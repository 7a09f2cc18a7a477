"""The policy codec at byte level: framing, limits, replies (docs/protocol.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postgate.wire.codec import (
    REQUEST_NAME,
    Decoder,
    EncodeError,
    Limits,
    PolicyRequest,
    ProtocolError,
    encode,
    encode_request,
)

CORPUS = Path(__file__).parents[1] / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.request"))
HEAD = b"request=smtpd_access_policy\n"

# docs/protocol.md, An observed request: Postfix 3.7.11 at the RCPT stage.
OBSERVED_RCPT = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "ESMTP",
    "client_address": "127.0.0.1",
    "client_name": "localhost",
    "client_port": "50626",
    "reverse_client_name": "localhost",
    "server_address": "127.0.0.1",
    "server_port": "10025",
    "helo_name": "client.example.net",
    "sender": "sender@example.org",
    "recipient": "ok@example.com",
    "recipient_count": "0",
    "queue_id": "",
    "instance": "25be.6b0b7c2f.1bba5.0",
    "size": "0",
    "etrn_domain": "",
    "stress": "",
    "sasl_method": "",
    "sasl_username": "",
    "sasl_sender": "",
    "ccert_subject": "",
    "ccert_issuer": "",
    "ccert_fingerprint": "",
    "ccert_pubkey_fingerprint": "",
    "encryption_protocol": "",
    "encryption_cipher": "",
    "encryption_keysize": "0",
    "policy_context": "",
}


def decode_one(wire: bytes, limits: Limits | None = None) -> dict[str, str]:
    """Feed ``wire`` whole and return the single request it must hold."""
    (request,) = Decoder(limits).feed(wire)
    return request.as_dict()


def feed_in_chunks(wire: bytes, size: int, limits: Limits | None = None) -> list[PolicyRequest]:
    decoder = Decoder(limits)
    requests: list[PolicyRequest] = []
    for start in range(0, len(wire), size):
        requests += decoder.feed(wire[start : start + size])
    assert 0 == decoder.pending
    return requests


def refuses(wire: bytes, limits: Limits | None = None) -> Decoder:
    """Feed ``wire`` whole, check it is refused, and hand back the dead decoder."""
    decoder = Decoder(limits)
    with pytest.raises(ProtocolError):
        decoder.feed(wire)
    return decoder


class TestFraming:
    def test_observed_postfix_request_decodes_to_its_attributes(self) -> None:
        """The request of docs/protocol.md (An observed request) decodes attribute for attribute."""
        assert OBSERVED_RCPT == decode_one((CORPUS / "postfix-3.7-rcpt.request").read_bytes())

    def test_crlf_request_reads_like_the_lf_one(self) -> None:
        """A stray CR before every LF, the empty line's included, is dropped."""
        lf = (CORPUS / "postfix-3.7-rcpt.request").read_bytes()
        assert OBSERVED_RCPT == decode_one(lf.replace(b"\n", b"\r\n"))

    def test_cr_on_some_lines_only_is_dropped(self) -> None:
        """LF and CRLF line ends may be mixed within one request."""
        assert {"request": REQUEST_NAME, "a": "1", "b": "2"} == decode_one(
            b"request=smtpd_access_policy\r\na=1\nb=2\r\n\n"
        )

    def test_lone_cr_ends_a_request_like_an_empty_line(self) -> None:
        """A line holding only a CR is an empty line once the stray CR is dropped."""
        assert {"request": REQUEST_NAME, "a": "1"} == decode_one(HEAD + b"a=1\n\r\n")

    def test_only_one_cr_before_lf_is_dropped(self) -> None:
        """A second CR is part of the value, as is a CR that is not before an LF."""
        assert {"request": REQUEST_NAME, "a": "1\r", "b": "x\ry"} == decode_one(
            HEAD + b"a=1\r\r\nb=x\ry\n\n"
        )

    def test_value_keeps_every_equals_sign_after_the_first(self) -> None:
        """Lines split at the first '=' only, so values may hold '='."""
        assert "a=b==c=" == decode_one(HEAD + b"ccert_subject=a=b==c=\n\n")["ccert_subject"]

    def test_empty_value_is_an_empty_string(self) -> None:
        """``name=`` is how Postfix sends an unavailable value."""
        assert "" == decode_one(HEAD + b"queue_id=\n\n")["queue_id"]

    def test_repeated_attribute_keeps_the_last_value(self) -> None:
        """The last of several lines with one name wins."""
        assert "second" == decode_one(HEAD + b"sender=first\nsender=second\n\n")["sender"]

    def test_unknown_attributes_are_kept(self) -> None:
        """Attributes from newer Postfix versions pass through untouched."""
        assert "mx.example" == decode_one(HEAD + b"tls_sni=mx.example\n\n")["tls_sni"]

    def test_request_line_may_come_anywhere(self) -> None:
        """Attribute order is not significant (docs/protocol.md, Framing)."""
        assert {"a": "1", "request": REQUEST_NAME} == decode_one(b"a=1\n" + HEAD + b"\n")

    def test_utf8_values_decode_to_text(self) -> None:
        """SMTPUTF8 addresses arrive as UTF-8 and read as text."""
        wire = HEAD + "sender=usuário@exemplo.com.br\n\n".encode()
        assert "usuário@exemplo.com.br" == decode_one(wire)["sender"]

    def test_invalid_utf8_value_is_recoverable_byte_for_byte(self) -> None:
        """Invalid UTF-8 decodes with surrogateescape and encodes back to the same bytes."""
        raw = b"\xff\xfe caf\xc3 \xe2\x82"
        value = decode_one(HEAD + b"helo_name=" + raw + b"\n\n")["helo_name"]
        assert raw == value.encode("utf-8", "surrogateescape")

    def test_invalid_utf8_name_is_recoverable_too(self) -> None:
        """Names get the same defensive decoding as values."""
        name = next(n for n in decode_one(HEAD + b"x\x80y=1\n\n") if n != "request")
        assert b"x\x80y" == name.encode("utf-8", "surrogateescape")

    def test_several_requests_in_one_feed_come_out_in_order(self) -> None:
        wire = HEAD + b"n=1\n\n" + HEAD + b"n=2\n\n" + HEAD + b"n=3\n\n"
        assert ["1", "2", "3"] == [r["n"] for r in Decoder().feed(wire)]

    def test_request_split_over_many_feeds_completes_on_the_last(self) -> None:
        """Nothing comes out until the empty line arrives."""
        decoder = Decoder()
        early = [
            decoder.feed(part) for part in (b"requ", b"est=smtpd_access", b"_policy\nn=", b"1\n")
        ]
        assert ([[], [], [], []], [{"request": REQUEST_NAME, "n": "1"}]) == (
            early,
            [r.as_dict() for r in decoder.feed(b"\n")],
        )

    def test_partial_request_is_reported_pending(self) -> None:
        """``pending`` counts the bytes of a request still arriving."""
        decoder = Decoder()
        decoder.feed(HEAD + b"n=1\n\n" + HEAD)
        assert len(HEAD) == decoder.pending

    def test_terminator_split_between_feeds_is_found(self) -> None:
        """An empty line whose LF, CR and LF arrive in separate feeds still ends the request."""
        decoder = Decoder()
        fed = [decoder.feed(part) for part in (HEAD + b"n=1\n", b"\r", b"\n")]
        assert [[], [], [PolicyRequest({"request": REQUEST_NAME, "n": "1"})]] == fed

    def test_empty_feed_returns_nothing(self) -> None:
        assert [] == Decoder().feed(b"")


class TestMalformed:
    def test_missing_request_attribute_is_refused(self) -> None:
        """``request=`` is mandatory (docs/protocol.md, Attributes)."""
        refuses(b"protocol_state=RCPT\n\n")

    @pytest.mark.parametrize("kind", [b"", b"SMTPD_ACCESS_POLICY", b"smtpd_access_policy ", b"x"])
    def test_request_attribute_other_than_smtpd_access_policy_is_refused(self, kind: bytes) -> None:
        refuses(b"request=" + kind + b"\nprotocol_state=RCPT\n\n")

    def test_last_request_attribute_decides(self) -> None:
        """A repeated ``request`` line follows the last-value rule too."""
        refuses(HEAD + b"request=other\n\n")

    def test_line_without_equals_is_refused(self) -> None:
        refuses(HEAD + b"garbage\n\n")

    def test_empty_name_is_refused(self) -> None:
        """A line starting with '=' has no name."""
        refuses(HEAD + b"=value\n\n")

    def test_empty_line_where_a_request_should_start_is_refused(self) -> None:
        """An empty request is not a request, even after a good one."""
        refuses(HEAD + b"\n\n")

    def test_empty_crlf_line_where_a_request_should_start_is_refused(self) -> None:
        """A lone CR LF between requests is an empty request too."""
        refuses(HEAD + b"\n\r\n")

    def test_refusal_names_the_bad_line(self) -> None:
        """The error says which line is wrong, for the log."""
        with pytest.raises(ProtocolError, match="line 2 has no '='"):
            Decoder().feed(HEAD + b"oops\n\n")

    def test_requests_completed_in_the_failing_feed_are_dropped(self) -> None:
        """A request completed in the same feed as garbage is lost: no reply may follow garbage."""
        refuses(HEAD + b"\n" + b"garbage\n\n")


class TestDeadDecoder:
    def test_decoder_keeps_refusing_after_an_error(self) -> None:
        decoder = refuses(b"garbage\n\n")
        with pytest.raises(ProtocolError, match="already failed"):
            decoder.feed(HEAD + b"\n")

    def test_dead_decoder_holds_no_bytes(self) -> None:
        """An error drops the buffered bytes with the connection's framing."""
        decoder = Decoder(Limits(max_line=8, max_request=64))
        decoder.feed(HEAD[:6])
        with pytest.raises(ProtocolError):
            decoder.feed(b"x" * 20)
        assert 0 == decoder.pending


class TestLineLimit:
    LIMITS = Limits(max_line=40, max_request=400, max_attributes=8)

    def test_line_of_exactly_max_line_bytes_is_accepted(self) -> None:
        """The bound is inclusive."""
        value = "v" * (40 - len("helo_name="))
        assert (
            value == decode_one(HEAD + f"helo_name={value}\n\n".encode(), self.LIMITS)["helo_name"]
        )

    def test_cr_before_lf_does_not_count(self) -> None:
        """A line is counted without its CR LF ending."""
        line = b"helo_name=" + b"v" * 30
        assert "v" * 30 == decode_one(HEAD + line + b"\r\n\r\n", self.LIMITS)["helo_name"]

    def test_cr_split_from_its_lf_by_a_feed_does_not_count(self) -> None:
        """A full-length line whose CR and LF arrive in different feeds still fits."""
        decoder = Decoder(self.LIMITS)
        fed = [decoder.feed(part) for part in (HEAD + b"helo_name=" + b"v" * 30, b"\r", b"\n\n")]
        assert [[], [], [PolicyRequest({"request": REQUEST_NAME, "helo_name": "v" * 30})]] == fed

    def test_complete_line_over_max_line_is_refused(self) -> None:
        refuses(HEAD + b"helo_name=" + b"v" * 31 + b"\n\n", self.LIMITS)

    def test_last_line_over_max_line_is_refused(self) -> None:
        """The limit holds for the line just before the empty line too."""
        refuses(HEAD + b"helo_name=" + b"v" * 31 + b"\r\n\r\n", self.LIMITS)

    def test_incomplete_line_is_refused_before_its_newline(self) -> None:
        """A line that can no longer fit fails while it is still arriving."""
        decoder = Decoder(self.LIMITS)
        decoder.feed(HEAD + b"helo_name=" + b"v" * 31)
        with pytest.raises(ProtocolError, match="line longer than 40"):
            decoder.feed(b"v")

    def test_endless_line_never_buffers_more_than_one_line(self) -> None:
        """A peer streaming bytes without a newline is cut off after about one line."""
        decoder = Decoder()
        chunk = b"x" * 4096
        held = [len(decoder.feed(chunk)) + decoder.pending for _ in range(4)]
        with pytest.raises(ProtocolError, match="line longer than 16384"):
            decoder.feed(chunk)
        assert [4096, 8192, 12288, 16384] == held


class TestRequestLimit:
    LIMITS = Limits(max_line=100, max_request=100)

    def wire_of_size(self, size: int) -> bytes:
        """A valid request exactly ``size`` bytes long on the wire, empty line included."""
        return HEAD + b"pad=" + b"p" * (size - len(HEAD) - len(b"pad=\n\n")) + b"\n\n"

    def test_request_of_exactly_max_request_bytes_is_accepted(self) -> None:
        """The bound is inclusive and counts the whole request on the wire."""
        assert [1] == [len(feed_in_chunks(self.wire_of_size(100), 100, self.LIMITS))]

    def test_complete_request_over_max_request_is_refused(self) -> None:
        """One byte more than the bound is refused, even when it arrives in one piece."""
        refuses(self.wire_of_size(101), self.LIMITS)

    def test_incomplete_request_is_refused_once_it_cannot_fit(self) -> None:
        decoder = Decoder(self.LIMITS)
        wire = self.wire_of_size(101)
        decoder.feed(wire[:100])
        with pytest.raises(ProtocolError, match="request longer than 100"):
            decoder.feed(wire[100:])

    def test_crlf_request_counts_its_crs(self) -> None:
        wire = self.wire_of_size(98)
        assert [1] == [len(Decoder(self.LIMITS).feed(wire))]
        refuses(wire.replace(b"\n", b"\r\n"), self.LIMITS)


class TestAttributeLimit:
    LIMITS = Limits(max_attributes=3)

    def test_max_attributes_lines_are_accepted(self) -> None:
        """The bound is inclusive."""
        assert 3 == len(decode_one(HEAD + b"a=1\nb=2\n\n", self.LIMITS))

    def test_one_attribute_more_is_refused(self) -> None:
        refuses(HEAD + b"a=1\nb=2\nc=3\n\n", self.LIMITS)

    def test_repeats_count_as_attributes(self) -> None:
        """The bound counts lines, so repeating one name cannot dodge it."""
        refuses(HEAD + b"a=1\na=1\na=1\n\n", self.LIMITS)


class TestLimitsValidation:
    def test_defaults_are_safe_and_generous(self) -> None:
        """16 KiB lines, 64 KiB requests, 256 attributes by default (docs/protocol.md, Framing)."""
        assert (16384, 65536, 256) == (
            Limits().max_line,
            Limits().max_request,
            Limits().max_attributes,
        )

    @pytest.mark.parametrize(
        "bounds",
        [(0, 10, 1), (-1, 10, 1), (11, 10, 1), (10, 10, 0)],
    )
    def test_impossible_bounds_are_refused(self, bounds: tuple[int, int, int]) -> None:
        """A line must fit a request, and every bound must admit something."""
        with pytest.raises(ValueError, match="max_"):
            Limits(*bounds)

    @pytest.mark.parametrize("value", [True, 16384.0, "16384", None])
    def test_non_integer_bounds_are_refused(self, value: object) -> None:
        """Bounds are byte and line counts, never floats, strings or flags."""
        with pytest.raises(TypeError, match="max_line must be an integer"):
            Limits(max_line=value)  # type: ignore[arg-type]


class TestPolicyRequest:
    REQUEST = PolicyRequest({"request": REQUEST_NAME, "sender": "a@example.org"})

    def test_absent_attribute_reads_as_empty(self) -> None:
        """``get`` answers absent attributes the way Postfix sends unavailable ones."""
        assert ("", "x") == (self.REQUEST.get("recipient"), self.REQUEST.get("recipient", "x"))

    def test_indexing_an_absent_attribute_raises_key_error(self) -> None:
        """Strict lookup stays available."""
        with pytest.raises(KeyError):
            self.REQUEST["recipient"]

    def test_reads_like_a_mapping(self) -> None:
        """Membership, length, iteration and items agree."""
        assert (True, False, 2, ["request", "sender"], [("sender", "a@example.org")]) == (
            "sender" in self.REQUEST,
            "recipient" in self.REQUEST,
            len(self.REQUEST),
            list(self.REQUEST),
            [item for item in self.REQUEST.items() if item[0] == "sender"],
        )

    def test_changing_the_source_or_a_copy_leaves_it_alone(self) -> None:
        """The request copies what it is built from and hands out copies."""
        source = {"request": REQUEST_NAME}
        request = PolicyRequest(source)
        source["request"] = "changed"
        request.as_dict()["request"] = "changed"
        assert REQUEST_NAME == request["request"]

    def test_equal_attributes_make_equal_hashable_requests(self) -> None:
        twin = PolicyRequest(self.REQUEST.as_dict())
        assert (True, 1) == (twin == self.REQUEST, len({twin, self.REQUEST}))

    def test_request_never_equals_a_plain_dict(self) -> None:
        """Comparison with other types is left to them."""
        assert self.REQUEST != self.REQUEST.as_dict()


class TestEncode:
    def test_reply_is_one_action_line_and_an_empty_line(self) -> None:
        """Exactly ``action=<text>\\n\\n`` (docs/protocol.md, Format)."""
        assert b"action=554 5.7.1 Relay access denied\n\n" == encode(
            "554 5.7.1 Relay access denied"
        )

    def test_utf8_text_is_encoded_as_utf8(self) -> None:
        """Non-ASCII text goes out as UTF-8, which Postfix accepts with SMTPUTF8."""
        assert b"action=WARN caf\xc3\xa9\n\n" == encode("WARN café")

    @pytest.mark.parametrize(
        "text", ["DUNNO\n", "REJECT a\rb", "REJECT a\0b", "", " ", "\t", "REJECT \udcff", "\ud800"]
    )
    def test_text_postfix_would_misread_is_refused(self, text: str) -> None:
        """CR, LF, NUL, blank text and lone surrogates never reach the wire."""
        with pytest.raises(EncodeError):
            encode(text)


class TestEncodeRequest:
    def test_request_is_name_value_lines_and_an_empty_line(self) -> None:
        """Attributes go out in mapping order, as Postfix writes them."""
        assert b"request=smtpd_access_policy\nsender=\n\n" == encode_request(
            {"request": REQUEST_NAME, "sender": ""}
        )

    def test_encoded_corpus_request_reads_back_unchanged(self) -> None:
        """Encoding the observed request reproduces Postfix's bytes exactly."""
        assert (CORPUS / "postfix-3.7-rcpt.request").read_bytes() == encode_request(OBSERVED_RCPT)

    def test_escaped_bytes_encode_back_to_the_original(self) -> None:
        wire = HEAD + b"helo_name=\xff\xc3(\n\n"
        assert wire == encode_request(decode_one(wire))

    def test_value_ending_in_cr_gets_a_second_cr_that_the_decoder_drops(self) -> None:
        """A trailing CR survives the trip because the stray-CR rule eats only the extra one."""
        attrs = {"request": REQUEST_NAME, "helo_name": "x\r"}
        wire = encode_request(attrs)
        assert (HEAD + b"helo_name=x\r\r\n\n", attrs) == (wire, decode_one(wire))

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("", "x"),
            ("a=b", "x"),
            ("a\nb", "x"),
            ("a\0b", "x"),
            ("name", "x\ny"),
            ("name", "x\0y"),
            ("name", "\ud800"),
            ("name", "\udcc3\udca9"),
        ],
    )
    def test_attributes_that_would_not_read_back_are_refused(self, name: str, value: str) -> None:
        """Attributes Postfix never sends, or that would read back differently, are refused."""
        with pytest.raises(EncodeError):
            encode_request({"request": REQUEST_NAME, name: value})


@pytest.mark.parametrize("size", [1, 16, 4096])
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
class TestCorpusGrid:
    """Every captured request at several read sizes."""

    def test_chunked_feed_gives_the_same_requests_as_a_whole_one(
        self, path: Path, size: int
    ) -> None:
        wire = path.read_bytes()
        assert Decoder().feed(wire) == feed_in_chunks(wire, size)

    def test_every_request_is_a_postfix_policy_request(self, path: Path, size: int) -> None:
        """Each corpus request carries the mandatory attributes with a known state."""
        states = {"CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY"}
        requests = feed_in_chunks(path.read_bytes(), size)
        assert (True, True) == (
            len(requests) > 0,
            all(r["request"] == REQUEST_NAME and r["protocol_state"] in states for r in requests),
        )


class TestCorpus:
    def test_corpus_covers_every_stage_and_the_hard_values(self) -> None:
        """The fixtures exercise each state, IPv6, SASL, TLS and SMTPUTF8 at least once."""
        requests = [r for path in CORPUS_FILES for r in Decoder().feed(path.read_bytes())]
        seen = {r["protocol_state"] for r in requests}
        assert (
            {"CONNECT", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY"},
            True,
            True,
            True,
            True,
        ) == (
            seen,
            any(":" in r["client_address"] for r in requests),
            any(r["sasl_username"] for r in requests),
            any(r["encryption_protocol"] and r["ccert_fingerprint"] for r in requests),
            any(not r["sender"].isascii() for r in requests),
        )

    def test_corpus_files_are_pure_wire_bytes_with_a_final_empty_line(self) -> None:
        """Fixtures hold just what Postfix writes: no comments, nothing after the last request."""
        tails = {path.name: path.read_bytes()[-2:] for path in CORPUS_FILES}
        assert dict.fromkeys(tails, b"\n\n") == tails
