"""Actions: parsing, refusals with fixes, warnings, catalogue, templates and the validator."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import dataclasses
import operator
import re
from pathlib import Path

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from postgate.replies import registry
from postgate.replies.catalogue import NAMED, SCENARIOS, named_reply
from postgate.replies.model import DUNNO, OK, Action, Verb
from postgate.replies.parsing import parse_action
from postgate.replies.sent import smtp_reply, validate_reply_line
from postgate.replies.templates import PLACEHOLDERS, sanitise
from postgate.replies.text import MAX_TEXT, ReplyError
from postgate.wire.codec import PolicyRequest, encode

DOCS = Path(__file__).resolve().parents[2] / "docs" / "replies.md"
LONGEST_ADDRESS = "a" * 64 + "@" + "d" * 189  # 254 octets: a 256-octet path with <>
REQUEST = PolicyRequest(
    {
        "request": "smtpd_access_policy",
        "client_address": "192.0.2.9",
        "sender": "s@example.net",
        "recipient": "r@example.com",
    }
)
REQUEST_NO_SENDER = PolicyRequest({"request": "smtpd_access_policy", "sender": ""})


def refusal(text: str) -> str:
    with pytest.raises(ReplyError) as caught:
        parse_action(text)
    return str(caught.value)


def client_line_length(line: str) -> int:
    """Octets of the SMTP reply Postfix makes of ``line`` for the longest address, with CRLF."""
    seen = smtp_reply(line, LONGEST_ADDRESS)
    return 0 if seen is None else len(seen.encode("ascii")) + 2


class TestEveryActionType:
    @pytest.mark.parametrize(
        ("text", "verb", "code", "dsn", "body"),
        [
            ("OK", Verb.OK, None, None, ""),
            ("DUNNO", Verb.DUNNO, None, None, ""),
            ("REJECT", Verb.REJECT, None, None, ""),
            ("REJECT Blocked by policy", Verb.REJECT, None, None, "Blocked by policy"),
            ("REJECT 5.7.26 Multiple failures", Verb.REJECT, None, "5.7.26", "Multiple failures"),
            ("DEFER", Verb.DEFER, None, None, ""),
            ("DEFER 4.3.0 later", Verb.DEFER, None, "4.3.0", "later"),
            ("DEFER_IF_REJECT wait", Verb.DEFER_IF_REJECT, None, None, "wait"),
            ("DEFER_IF_PERMIT 4.7.1 Greylisted", Verb.DEFER_IF_PERMIT, None, "4.7.1", "Greylisted"),
            ("550 5.1.1 User unknown", Verb.CODE, 550, "5.1.1", "User unknown"),
            ("450 Try later", Verb.CODE, 450, None, "Try later"),
            ("421 4.7.0 Closing", Verb.CODE, 421, "4.7.0", "Closing"),
            ("HOLD", Verb.HOLD, None, None, ""),
            ("HOLD look at this", Verb.HOLD, None, None, "look at this"),
            ("DISCARD", Verb.DISCARD, None, None, ""),
            ("DISCARD spam trap", Verb.DISCARD, None, None, "spam trap"),
            ("FILTER smtp:[127.0.0.1]:10025", Verb.FILTER, None, None, "smtp:[127.0.0.1]:10025"),
            ("PREPEND X-Postgate: tagged", Verb.PREPEND, None, None, "X-Postgate: tagged"),
            ("REDIRECT q@example.com", Verb.REDIRECT, None, None, "q@example.com"),
            ("BCC archive@example.com", Verb.BCC, None, None, "archive@example.com"),
            ("WARN watch this sender", Verb.WARN, None, None, "watch this sender"),
            ("INFO seen", Verb.INFO, None, None, "seen"),
        ],
    )
    def test_action_parses_into_its_parts(
        self, text: str, verb: Verb, code: int | None, dsn: str | None, body: str
    ) -> None:
        """Each action Postfix accepts parses into verb, code, enhanced code and text."""
        action = parse_action(text).action
        assert (verb, code, dsn, body, text) == (
            action.verb,
            action.code,
            action.dsn,
            action.text,
            action.line,
        )

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("reject Blocked", "REJECT Blocked"),
            ("Defer_If_Permit 4.7.1 Grey", "DEFER_IF_PERMIT 4.7.1 Grey"),
            ("dunno", "DUNNO"),
            ("  prepend X-A: b  ", "PREPEND X-A: b"),
            ("warn  two  spaces inside", "WARN two  spaces inside"),
        ],
    )
    def test_keywords_are_case_insensitive_and_emitted_upper_case(
        self, text: str, line: str
    ) -> None:
        """Postfix reads keywords in any case; postgate always sends them upper-case."""
        assert line == parse_action(text).action.line

    @pytest.mark.parametrize("name", sorted(NAMED))
    def test_line_parses_back_to_the_same_action(self, name: str) -> None:
        """``parse_action(a.line)`` rebuilds ``a`` for every catalogue action."""
        action = NAMED[name]
        assert action == parse_action(action.line).action

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("550 x", True),
            ("REJECT", True),
            ("DEFER", True),
            ("DEFER_IF_PERMIT", True),
            ("DEFER_IF_REJECT", True),
            ("OK", False),
            ("DUNNO", False),
            ("HOLD", False),
            ("WARN w", False),
        ],
    )
    def test_is_reject_is_true_for_replies_only(self, text: str, expected: bool) -> None:
        """Codes, REJECT, DEFER and DEFER_IF_* count as rejects; the rest does not."""
        assert expected == parse_action(text).action.is_reject


class TestConstruction:
    @pytest.mark.parametrize(
        "fields",
        [
            {"verb": Verb.CODE, "text": "x", "code": 554, "dsn": "4.7.1"},
            {"verb": Verb.CODE, "text": "x", "code": 250},
            {"verb": Verb.CODE, "text": "", "code": 550},
            {"verb": Verb.REJECT, "text": "x", "code": 550},
            {"verb": Verb.OK, "text": "x"},
            {"verb": Verb.HOLD, "text": "x", "dsn": "5.7.1"},
            {"verb": Verb.REJECT, "text": "5.7.1 hidden code"},
            {"verb": Verb.REJECT, "text": " padded"},
            {"verb": Verb.WARN, "text": "line\nbreak"},
            {"verb": Verb.REDIRECT, "text": "nobody"},
        ],
    )
    def test_invalid_actions_cannot_be_built(self, fields: dict[str, object]) -> None:
        """The constructor refuses what parse_action would refuse: valid by construction."""
        with pytest.raises(ReplyError):
            Action(**fields)  # type: ignore[arg-type]

    def test_replace_revalidates(self) -> None:
        with pytest.raises(ReplyError):
            dataclasses.replace(named_reply("relay_denied"), dsn="4.7.1")

    def test_constants_are_the_bare_keywords(self) -> None:
        """OK and DUNNO encode to exactly the two bare keywords."""
        assert (b"action=OK\n\n", b"action=DUNNO\n\n") == (OK.wire, DUNNO.wire)

    def test_plain_action_answers_with_its_precomputed_wire(self) -> None:
        """Without a template, encode_for returns the very bytes object built at load."""
        action = named_reply("relay_denied")
        assert (True, b"action=554 5.7.1 Relay access denied\n\n") == (
            action.encode_for(REQUEST, "R1") is action.wire,
            action.wire,
        )

    def test_doubled_braces_are_literal_and_need_no_rendering(self) -> None:
        """``{{x}}`` is sent as ``{x}`` from a precomputed wire; the line keeps the source."""
        action = parse_action("550 5.7.1 use {{x}} here").action
        assert ("550 5.7.1 use {{x}} here", b"action=550 5.7.1 use {x} here\n\n") == (
            action.line,
            action.wire,
        )


class TestRefusals:
    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("554 4.7.1 x", "write '554 5.7.1 x'"),
            ("450 5.7.1 x", "write '450 4.7.1 x'"),
            ("REJECT 4.7.1 x", "write 'REJECT 5.7.1 x'"),
            ("DEFER_IF_PERMIT 5.7.1 x", "write 'DEFER_IF_PERMIT 4.7.1 x'"),
            ("550 5.4.8 x", "use 5.4.0"),
            ("550 5.9.1 x", "subjects are 0-7"),
            ("550 5.07.1 x", "without leading zeros"),
            ("550 6.7.1 x", "class 2, 4 or 5"),
            ("550 5.7.1234 x", "one to three digits"),
            ("REJECT X.7.1 x", "write 5.7.1"),
            ("550", "read by Postfix as OK"),
            ("450", "read by Postfix as OK"),
            ("550 5.7.1", "no text after the enhanced code"),
            ("5500 x", "not a three-digit reply code"),
            ("250 fine", "to accept write OK"),
            ("354 go", "use a 4xx or 5xx code"),
            ("650 x", "only 4xx (temporary) or 5xx"),
            ("570 x", "second digit"),
            ("REJECT " + "x" * (MAX_TEXT + 1), f"keep it within {MAX_TEXT}"),
            ("REJECT tab\there", "control character"),
            ("REJECT caf\u00e9", "non-ASCII"),
            ("REJECT nul\x00", "control character"),
            ("", "empty"),
            ("   ", "empty"),
            ("BLOCK", "accepted: OK, DUNNO, REJECT"),
            ("rejct Go away", "did you mean REJECT?"),
            ("DEFER_IF_PERMT x", "did you mean DEFER_IF_PERMIT?"),
            ("CODE 550 x", "is not an action Postfix knows"),
            ("HANGUP", "421 4.7.0"),
            ("RELAY", "write OK"),
            ("DELAY 1h", "compiled out"),
            ("reject_unauth_destination", "restriction name"),
            ("permit_mynetworks", "restriction name"),
            ("check_client_access", "restriction name"),
            ("hash:/etc/postfix/access", "lookup table"),
            ("OK whatever", "write just 'OK'"),
            ("DUNNO whatever", "write just 'DUNNO'"),
            ("WARN", "needs a text"),
            ("INFO", "needs a text"),
            ("FILTER smtp", "transport:destination"),
            ("FILTER", "transport:destination"),
            ("FILTER smtp:a b", "no spaces"),
            ("FILTER {rule}:x", "transport:destination"),
            ("REDIRECT nobody", "address with an '@'"),
            ("REDIRECT <a@b.example>", "no spaces or <>"),
            ("BCC a@b c@d", "one bare address"),
            ("BCC {sender}", "one bare address"),
            ("BCC " + "a" * 250 + "@b.example", "RFC 5321"),
            ("PREPEND nothing", "'Name: value'"),
            ("PREPEND X-Empty:", "'Name: value'"),
            ("PREPEND Bad Name: v", "'Name: value'"),
            ("PREPEND X-{rule}: v", "'Name: value'"),
            ("REJECT {sendr} blocked", "did you mean {sender}?"),
            ("REJECT {0} blocked", "unknown placeholder {0}"),
            ("REJECT {sender!r} blocked", "unknown placeholder"),
            ("REJECT open { brace", "unbalanced '{'"),
            ("REJECT close } brace", "unbalanced '}'"),
        ],
    )
    def test_refusal_explains_and_suggests_the_fix(self, text: str, fragment: str) -> None:
        """Each invalid action is refused with one sentence that contains the fix."""
        message = refusal(text)
        assert (True, True) == (fragment in message, message.endswith((".", ")")))

    def test_every_refusal_lists_no_internal_names(self) -> None:
        """Unknown-word errors list the keywords an author can write, not Verb.CODE."""
        assert "CODE" not in refusal("BLOCK")


class TestWarnings:
    @pytest.mark.parametrize(
        ("text", "pairing"),
        [
            ("510 Bad address", "'550 5.1.1'"),
            ("510 5.1.3 Bad address", "'553 5.1.3'"),
            ("511 Bad address", "'550 5.1.1'"),
            ("512 5.1.2 Domain not found", "'550 5.1.2'"),
            ("512 Domain unresolvable", "'550 5.1.2'"),
            ("513 Address type", "'553 5.1.3'"),
            ("523 Too big", "'552 5.2.3'"),
            ("541 Spam", "'550 5.7.1'"),
            ("533 5.7.1 Not authorised", "'550 5.7.1'"),
            ("557 5.7.1 Made up", "'550 5.7.1'"),
            ("457 Made up", "'450 4.7.1'"),
        ],
    )
    def test_non_standard_code_is_accepted_with_the_standard_pairing(
        self, text: str, pairing: str
    ) -> None:
        """A seed-table or invented code passes, with a warning naming the code to use."""
        warnings = parse_action(text).warnings
        assert (1, True) == (len(warnings), pairing in warnings[0])

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("556 5.1.10 Null MX", "rewrites 5.1.10"),
            ("550 5.1.9 Gateway", "rewrites 5.1.9"),
            ("550 5.6.10 UTF-8", "deprecated"),
            ("550 5.1.5 Odd", "success detail"),
            ("552 5.5.3 Too many", "452 4.5.3"),
            ("551 5.7.1 Relay access denied", "550 5.7.1"),
        ],
    )
    def test_context_free_pitfalls_warn(self, text: str, fragment: str) -> None:
        """Codes Postfix always rewrites, deprecated or misread ones warn but pass."""
        warnings = parse_action(text).warnings
        assert (1, True) == (len(warnings), fragment in warnings[0])

    @pytest.mark.parametrize(
        "text",
        ["550 5.7.1 Blocked", "550 5.1.7 Bad sender", "421 4.7.0 Bye", "REJECT", "WARN x"],
    )
    def test_standard_replies_do_not_warn(self, text: str) -> None:
        """Context-dependent rewrites (X.1.7 at RCPT) are documented, not warned about."""
        assert () == parse_action(text).warnings


class TestLengthBudget:
    def test_max_text_follows_from_the_512_octet_limit(self) -> None:
        """512 - 'NNN ' - 'X.YY.Z ' - '<254-octet address>: Recipient address rejected: ' - CRLF."""
        assert 213 == MAX_TEXT

    def test_longest_text_fills_the_line_exactly_in_the_worst_case(self) -> None:
        """A text of MAX_TEXT with the longest registered code gives a 512-octet SMTP line."""
        action = parse_action("550 5.7.30 " + "t" * MAX_TEXT).action
        assert 512 == client_line_length(action.line)

    def test_templated_text_is_measured_without_its_placeholders(self) -> None:
        """The literal part of a template may use the whole budget; rendering caps the rest."""
        action = parse_action("REJECT {sender} " + "t" * (MAX_TEXT - 1)).action
        rendered = action.render(REQUEST, "R")
        assert (True, True) == (
            len(rendered) - len("REJECT ") <= MAX_TEXT,
            client_line_length(rendered) <= 512,
        )


class TestTemplates:
    def test_placeholders_are_rendered_from_the_request_and_the_rule(self) -> None:
        """Every placeholder reads its attribute; domains and the rule id are derived."""
        text = " ".join("{" + name + "}" for name in PLACEHOLDERS)
        request = PolicyRequest(
            {name: f"v-{name}" for name in PLACEHOLDERS}
            | {"sender": "a@s.example", "recipient": "b@r.example"}
        )
        rendered = parse_action("WARN " + text).action.render(request, "RULE_7")
        expected = (
            "WARN v-client_address v-client_name a@s.example b@r.example v-helo_name "
            "s.example r.example v-sasl_username v-protocol_state v-queue_id RULE_7 "
            "v-limit v-window v-retry"
        )
        assert expected == rendered

    def test_template_action_has_no_wire_and_renders_per_request(self) -> None:
        """A templated action is encoded per request through protocol.encode."""
        action = NAMED["dnsbl_listed"]
        expected = encode(
            "554 5.7.1 Service unavailable; Client host [192.0.2.9] is listed on a DNS blocklist"
        )
        assert (b"", expected) == (action.wire, action.encode_for(REQUEST, "R"))

    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("evil\r\n\r\naction=OK", "evil????action=OK"),
            ("tab\there", "tab?here"),
            ("del\x7f", "del?"),
            ("bad\udcffutf8", "bad?utf8"),
            ("j\u00f6rg", "j?rg"),
            ("  many   spaces  ", "many spaces"),
            ("", "unknown"),
            ("x" * 100, "x" * 61 + "..."),
        ],
    )
    def test_values_are_sanitised(self, raw: str, clean: str) -> None:
        """Controls, DEL, surrogates and non-ASCII become '?', spaces shrink, length is capped."""
        assert clean == sanitise(raw)

    def test_empty_sender_renders_as_the_null_sender(self) -> None:
        """The null sender shows as <>, other empty values as 'unknown'."""
        action = parse_action("REJECT from {sender} via {helo_name}").action
        assert "REJECT from <> via unknown" == action.render(REQUEST_NO_SENDER, "R")

    def test_value_shaped_like_an_enhanced_code_cannot_set_the_code(self) -> None:
        """A value at the start of the text is kept from being read as an enhanced code."""
        action = parse_action("REJECT {helo_name} is not welcome").action
        request = PolicyRequest({"helo_name": "2.0.0"})
        assert "REJECT 5.7.1 2.0.0 is not welcome" == action.render(request, "R")

    def test_numeric_reply_gets_its_own_class_when_pinned(self) -> None:
        """The pinned default enhanced code follows the basic code's class."""
        action = parse_action("450 {helo_name} later").action
        request = PolicyRequest({"helo_name": "5.7.1"})
        assert "450 4.7.1 5.7.1 later" == action.render(request, "R")

    def test_prepend_value_may_use_placeholders(self) -> None:
        action = parse_action("PREPEND X-Postgate-Rule: {rule}").action
        assert "PREPEND X-Postgate-Rule: BL_1" == action.render(REQUEST, "BL_1")


# The scenarios of docs/replies.md (Named replies), each with its name.
REQUIRED_NAMES = {
    "accept", "dunno", "relay_denied", "client_blocked", "sender_blocked",
    "recipient_blocked", "dnsbl_listed", "message_too_large", "message_too_large_eom",
    "mailbox_full", "too_many_recipients", "rate_limited", "too_many_connections",
    "mailbox_rate_limited", "system_busy", "mail_flood", "greylisted",
    "insufficient_storage", "auth_required", "tls_required", "sender_syntax",
    "recipient_syntax", "unknown_user", "domain_not_found", "sender_domain_not_found",
    "sender_null_mx", "spf_fail", "spf_temperror", "spf_permerror", "reverse_dns_missing",
    "reverse_dns_failed", "temporary_failure", "config_error", "content_rejected",
}  # fmt: skip


class TestNamedCatalogue:
    def test_catalogue_covers_every_required_scenario(self) -> None:
        """Each scenario of docs/replies.md (Named replies) has a named reply."""
        assert set() == REQUIRED_NAMES - NAMED.keys()

    @pytest.mark.parametrize(
        ("name", "line"),
        [
            ("relay_denied", "554 5.7.1 Relay access denied"),
            ("message_too_large", "552 5.3.4 Message size exceeds fixed limit"),
            ("too_many_recipients", "452 4.5.3 Too many recipients"),
            ("greylisted", "DEFER_IF_PERMIT 4.7.1 Greylisted, try again later"),
            ("insufficient_storage", "452 4.3.1 Insufficient system storage"),
            ("tls_required", "530 5.7.0 Must issue a STARTTLS command first"),
            ("accept", "OK"),
            ("dunno", "DUNNO"),
        ],
    )
    def test_documented_replies_have_the_documented_wording(self, name: str, line: str) -> None:
        """The replies docs/replies.md (Named replies) spells out are exactly as written there."""
        assert line == NAMED[name].line

    @pytest.mark.parametrize("name", sorted(NAMED))
    def test_every_named_reply_validates_without_warnings(self, name: str) -> None:
        """Catalogue replies pass the independent validator and parse without warnings."""
        action = NAMED[name]
        line = action.render(REQUEST, "R")
        assert ([], (), True) == (
            validate_reply_line(line),
            parse_action(action.line).warnings,
            client_line_length(line) <= 512,
        )

    def test_every_name_is_snake_case_with_a_scenario(self) -> None:
        """Names are snake_case and each has a scenario line for the docs."""
        bad = [n for n in NAMED if not re.fullmatch(r"[a-z][a-z0-9_]*", n) or not SCENARIOS[n]]
        assert [] == bad

    def test_names_are_looked_up_case_insensitively(self) -> None:
        """Names are matched after trimming and lower-casing."""
        assert NAMED["relay_denied"] is named_reply(" Relay_Denied ")

    def test_unknown_name_suggests_close_names(self) -> None:
        with pytest.raises(ReplyError, match="did you mean relay_denied"):
            named_reply("relay_deny")

    def test_docs_table_lists_every_named_reply(self) -> None:
        """docs/replies.md shows each name with its exact action line."""
        text = DOCS.read_text(encoding="utf-8")
        missing = [n for n, a in NAMED.items() if f"| `{n}` | `{a.line}` |" not in text]
        assert [] == missing


class TestValidator:
    @pytest.mark.parametrize(
        "line",
        [
            "OK",
            "DUNNO",
            "REJECT",
            "REJECT Blocked",
            "REJECT 5.7.26 Multiple failures",
            "DEFER_IF_PERMIT 4.7.1 Greylisted",
            "550 5.1.1 User unknown",
            "450 Try later",
            "HOLD",
            "DISCARD spam",
            "FILTER smtp:[127.0.0.1]:10025",
            "PREPEND X-A: b",
            "REDIRECT a@b.example",
            "BCC a@b.example",
            "WARN w",
            "INFO i",
            "550 5.7.1 " + "t" * MAX_TEXT,
        ],
    )
    def test_good_lines_pass(self, line: str) -> None:
        assert [] == validate_reply_line(line)

    @pytest.mark.parametrize(
        ("line", "problem"),
        [
            ("", "empty action"),
            ("550", "needs a text"),
            ("250 ok", "is not ^[45][0-5][0-9]$"),
            ("560 x", "is not ^[45][0-5][0-9]$"),
            ("512 5.1.2 x", "not a standard code"),
            ("541 x", "not a standard code"),
            ("554 4.7.1 x", "does not match class 5"),
            ("REJECT 4.7.1 x", "does not match class 5"),
            ("DEFER 5.7.1 x", "does not match class 4"),
            ("550 5.4.8 x", "not registered"),
            ("550 5.07.1 x", "bad syntax"),
            ("550 6.1.1 x", "bad syntax"),
            ("550 5.7.1  x", "surrounding spaces"),
            ("550 5.7.1 " + "t" * (MAX_TEXT + 1), "longer than"),
            ("REJECT a\tb", "printable"),
            ("REJECT caf\u00e9", "printable"),
            ("DUNNO x", "takes no text"),
            ("reject x", "unknown action word"),
            ("BLOCK", "unknown action word"),
            ("FILTER smtp", "bad FILTER"),
            ("REDIRECT bob", "bad REDIRECT"),
            ("PREPEND nope", "bad PREPEND"),
            ("WARN", "bad WARN"),
        ],
    )
    def test_bad_lines_are_reported(self, line: str, problem: str) -> None:
        """Each validator rule reports its own problem."""
        assert any(problem in p for p in validate_reply_line(line)), validate_reply_line(line)


class TestSmtpReply:
    @pytest.mark.parametrize(
        ("line", "seen"),
        [
            ("REJECT", "554 5.7.1 <r@x>: Recipient address rejected: Access denied"),
            ("DEFER", "450 4.7.1 <r@x>: Recipient address rejected: Access denied"),
            ("DEFER_IF_PERMIT", "450 4.7.1 <r@x>: Recipient address rejected: Service unavailable"),
            ("550 Go away", "550 5.7.1 <r@x>: Recipient address rejected: Go away"),
            ("554 4.7.1 Mismatch", "554 5.7.1 <r@x>: Recipient address rejected: Mismatch"),
            ("REJECT 5.7.26 Multi", "554 5.7.26 <r@x>: Recipient address rejected: Multi"),
        ],
    )
    def test_wording_matches_observed_postfix_replies(self, line: str, seen: str) -> None:
        """Defaults and class forcing follow the replies observed in docs/protocol.md."""
        assert seen == smtp_reply(line, "r@x")

    @pytest.mark.parametrize("line", ["OK", "DUNNO", "HOLD", "WARN x", "550"])
    def test_actions_without_a_reply_of_their_own_give_none(self, line: str) -> None:
        """Accepting, logging and bare-code actions produce no reject line."""
        assert smtp_reply(line, "r@x") is None


# ------------------------------------------------------------------ properties

HOSTILE = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=80),
    st.binary(max_size=120).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.builds(operator.mul, st.text(min_size=1, max_size=6), st.integers(50, 3000)),
)
ATTRIBUTES = [p for p in PLACEHOLDERS if p not in ("rule", "sender_domain", "recipient_domain")]
REQUESTS = st.fixed_dictionaries({}, optional=dict.fromkeys(ATTRIBUTES, HOSTILE)).map(PolicyRequest)
LITERAL = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="{}"),
    max_size=30,
)
TEMPLATES = st.lists(
    st.tuples(LITERAL, st.sampled_from(PLACEHOLDERS), LITERAL), min_size=1, max_size=6
).map(lambda parts: "".join(f"{a}{{{name}}}{b}" for a, name, b in parts).strip())
STANDARD_REPLY_CODES = [b.code for b in registry.BASIC if b.standard and b.code // 100 in (4, 5)]


@st.composite
def templated_actions(draw: st.DrawFn) -> Action:
    """Any reply, log or header action a template can build."""
    text = draw(TEMPLATES)
    kind = draw(st.sampled_from(["code", "reply", "log", "prepend"]))
    if kind == "prepend":
        return _or_reject(Verb.PREPEND, "X-Postgate: " + text)
    if kind == "log":
        verb = draw(st.sampled_from([Verb.WARN, Verb.INFO, Verb.HOLD, Verb.DISCARD]))
        return _or_reject(verb, text)
    verb = Verb.CODE if kind == "code" else draw(st.sampled_from(list(REPLY_CLASSES)))
    code = draw(st.sampled_from(STANDARD_REPLY_CODES)) if kind == "code" else None
    klass = code // 100 if code else REPLY_CLASSES[verb]
    entry = draw(st.none() | st.sampled_from(registry.ENHANCED))
    dsn = entry.with_class(klass) if entry else None
    return _or_reject(verb, text, code, dsn)


REPLY_CLASSES = {Verb.REJECT: 5, Verb.DEFER: 4, Verb.DEFER_IF_REJECT: 4, Verb.DEFER_IF_PERMIT: 4}


def _or_reject(*args: object) -> Action:
    try:
        return Action(*args)  # type: ignore[arg-type]
    except ReplyError:
        # Only literals that start like an enhanced code get here; hypothesis
        # then draws again.
        reject()
        raise


ACTIONS = st.one_of(st.sampled_from(list(NAMED.values())), templated_actions())


class TestProperties:
    @given(action=ACTIONS, request=REQUESTS, rule=HOSTILE)
    def test_any_buildable_action_renders_to_a_valid_reply(
        self, action: Action, request: PolicyRequest, rule: str
    ) -> None:
        """Whatever a request holds, the reply passes the validator, encodes and fits 512 octets."""
        line = action.render(request, rule)
        assert ([], encode(line), True) == (
            validate_reply_line(line),
            action.encode_for(request, rule),
            client_line_length(line) <= 512,
        )

    @given(value=HOSTILE)
    def test_sanitised_values_are_short_printable_ascii(self, value: str) -> None:
        """sanitise always returns 1..64 printable ASCII characters without edge spaces."""
        clean = sanitise(value)
        assert (True, True) == (
            bool(re.fullmatch(r"[!-~]([ -~]*[!-~])?", clean)),
            len(clean) <= 64,
        )

    @given(text=st.text(max_size=300))
    def test_parse_action_fails_only_with_reply_error(self, text: str) -> None:
        """Arbitrary config text either parses into a valid action or raises ReplyError."""
        try:
            outcome = encode(parse_action(text).action.render(REQUEST, "R")).decode()
        except ReplyError as exc:
            outcome = f"action=refused: {exc}"
        assert outcome.startswith("action=")
