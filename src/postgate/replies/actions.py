"""Actions postgate answers with: valid by construction, named, templated.

Owns the action types Postfix accepts from a policy server
(policy-protocol.md §4.1), the checks that keep every one of them a reply
Postfix reads as intended (policy-protocol.md §4.3-§4.4, reply-codes.md §6),
the named catalogue (reply-codes.md §5, data in ``data/named-replies.csv``) and
the rendering of ``{placeholder}`` templates from request values.

An `Action` that exists is valid: ``__post_init__`` refuses anything else with a
`ReplyError` whose message says what to write instead. Actions without a
template carry their encoded reply in ``wire``, so answering costs nothing.
Imports only the codec and the code registry; no Twisted.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from postgate.replies import registry
from postgate.wire.codec import encode

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.wire.codec import PolicyRequest

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including CRLF.
# §4.5.3.1.3: a path ("<local@domain>") is at most 256 octets.
SMTP_LINE_MAX: Final = 512
PATH_MAX: Final = 256
ADDRESS_MAX: Final = PATH_MAX - 2
# The longest prefix Postfix puts before our text (policy-protocol.md §4.2).
WORST_PREFIX: Final = "<" + "x" * ADDRESS_MAX + ">: Recipient address rejected: "
# "NNN " + longest registered enhanced code + " " + prefix + text + CRLF <= 512.
MAX_TEXT: Final = (
    SMTP_LINE_MAX - len("554 ") - (registry.LONGEST_ENHANCED + 1) - len(WORST_PREFIX) - 2
)
# Each inserted request value is cut to this many characters.
VALUE_MAX: Final = 64
ELLIPSIS: Final = "..."

PLACEHOLDERS: Final = (
    "client_address",
    "client_name",
    "sender",
    "recipient",
    "helo_name",
    "sender_domain",
    "recipient_domain",
    "sasl_username",
    "protocol_state",
    "queue_id",
    "rule",
)


class ReplyError(ValueError):
    """An action Postfix would refuse, misread or answer wrongly; the message says the fix."""


class Verb(enum.Enum):
    OK = "OK"
    DUNNO = "DUNNO"
    REJECT = "REJECT"
    DEFER = "DEFER"
    DEFER_IF_REJECT = "DEFER_IF_REJECT"
    DEFER_IF_PERMIT = "DEFER_IF_PERMIT"
    CODE = "CODE"
    HOLD = "HOLD"
    DISCARD = "DISCARD"
    FILTER = "FILTER"
    PREPEND = "PREPEND"
    REDIRECT = "REDIRECT"
    BCC = "BCC"
    WARN = "WARN"
    INFO = "INFO"


# Verbs whose text becomes an SMTP reply and may start with an enhanced code,
# with the class Postfix gives them (policy-protocol.md §4.3 step 2).
_REPLY_CLASS: Final = MappingProxyType(
    {
        Verb.REJECT: 5,
        Verb.DEFER: 4,
        Verb.DEFER_IF_REJECT: 4,
        Verb.DEFER_IF_PERMIT: 4,
    }
)
_REPLY_WORDS: Final = MappingProxyType({v.value: k for v, k in _REPLY_CLASS.items()})
_BARE: Final = frozenset({Verb.OK, Verb.DUNNO})
_NEEDS_TEXT: Final = frozenset({Verb.CODE, Verb.WARN, Verb.INFO})
_NO_TEMPLATE: Final = frozenset({Verb.FILTER, Verb.REDIRECT, Verb.BCC})
_KEYWORDS: Final = MappingProxyType({v.value: v for v in Verb if v is not Verb.CODE})

# Postfix's enhanced-code test (dsn_split): a dotted triple followed by a space
# or the end. Anything shaped like one is checked, so a typo cannot slip into
# the text unnoticed.
_DSN_LIKE: Final = re.compile(r"[0-9X]+\.[0-9]+\.[0-9]+(?= |$)")
_CONTROL: Final = re.compile(r"[^\x20-\x7e]")
_TEMPLATE_TOKEN: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_TRANSPORT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*:\S*")
_ADDRESS: Final = re.compile(r"[^\s@<>{}]+@[^\s@<>{}]+")
_HEADER: Final = re.compile(r"([!-9;-~]+):[ ]?(\S.*)")
_RESTRICTION: Final = re.compile(r"(permit|reject|defer|check|warn_if_reject|sleep)(_\w+)?")


@dataclass(frozen=True, slots=True)
class _Template:
    """A text split at its placeholders, with the action head to put before it.

    ``literals`` has one more item than ``names``. ``pinned`` is the head with
    Postfix's default enhanced code, used when the rendered text starts like
    one: Postfix would otherwise take a client's value as the code (dsn_split).
    """

    literals: tuple[str, ...]
    names: tuple[str, ...]
    head: str = ""
    pinned: str | None = None

    def render(self, request: PolicyRequest, rule_id: str) -> str:
        parts = [self.head, " ", self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            parts += (_value(name, request, rule_id), literal)
        line = "".join(parts)
        if len(line) - len(self.head) - 1 > MAX_TEXT:
            line = self.head + " " + _cap(line[len(self.head) + 1 :], MAX_TEXT)
        if self.pinned and _DSN_LIKE.match(line, len(self.head) + 1):
            return self.pinned + line[len(self.head) :]
        return line


@dataclass(frozen=True, slots=True)
class Action:
    """One answer to Postfix; see module docstring for the guarantees.

    ``line`` is the source form (templates unrendered, ``{{`` kept), so
    ``parse_action(a.line).action == a``; `render` gives what is sent.
    """

    verb: Verb
    text: str = ""
    code: int | None = None
    dsn: str | None = None
    line: str = field(init=False, compare=False, repr=False)
    # Without a template: the text sent and its frame, built once; else empty.
    sent: str = field(init=False, compare=False, repr=False)
    wire: bytes = field(init=False, compare=False, repr=False)
    _template: _Template | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check(self)
        template = _compile_template(self)
        head = _head(self.verb, self.code, self.dsn)
        object.__setattr__(self, "line", _join(head, self.text))
        if template.names:
            pinned = None
            if self.dsn is None and self.is_reject:
                pinned = _head(self.verb, self.code, f"{_reply_class(self)}.7.1")
            template = dataclasses.replace(template, head=head, pinned=pinned)
            object.__setattr__(self, "_template", template)
            object.__setattr__(self, "sent", "")
            object.__setattr__(self, "wire", b"")
        else:
            object.__setattr__(self, "_template", None)
            object.__setattr__(self, "sent", _join(head, template.literals[0]))
            object.__setattr__(self, "wire", encode(self.sent))

    @property
    def is_reject(self) -> bool:
        return self.verb is Verb.CODE or self.verb in _REPLY_CLASS

    @property
    def has_template(self) -> bool:
        return self._template is not None

    def render(self, request: PolicyRequest, rule_id: str) -> str:
        """The action text sent for this request: values sanitised, length capped."""
        template = self._template
        if template is None:
            return self.sent
        return template.render(request, rule_id)

    def encode_for(self, request: PolicyRequest, rule_id: str) -> bytes:
        if self.wire:
            return self.wire
        return encode(self.render(request, rule_id))


@dataclass(frozen=True, slots=True)
class ParsedAction:
    action: Action
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------- construction


def _head(verb: Verb, code: int | None, dsn: str | None) -> str:
    word = str(code) if verb is Verb.CODE else verb.value
    return f"{word} {dsn}" if dsn else word


def _join(head: str, text: str) -> str:
    return f"{head} {text}" if text else head


def _reply_class(action: Action) -> int:
    if action.code is not None:
        return action.code // 100
    return _REPLY_CLASS[action.verb]


def _check(action: Action) -> None:
    _check_shape(action)
    if action.code is not None:
        _check_code(action.code)
    if action.dsn is not None:
        _check_dsn(action)
    _check_text(action)
    _OPERAND_CHECKS.get(action.verb, _no_check)(action.text)


def _check_shape(action: Action) -> None:
    verb = action.verb
    if (verb is Verb.CODE) != (action.code is not None):
        raise ReplyError("a numeric reply is Verb.CODE with a code; other verbs take no code")
    if action.dsn is not None and not action.is_reject:
        raise ReplyError(f"{verb.value} takes no enhanced status code; only replies do")
    if verb in _BARE and action.text:
        raise ReplyError(
            f"{verb.value} takes no text (Postfix ignores it); write just '{verb.value}'."
        )
    if verb in _NEEDS_TEXT and not action.text:
        raise ReplyError(_missing_text(action))


def _missing_text(action: Action) -> str:
    if action.verb is not Verb.CODE:
        return f"{action.verb.value} needs a text, e.g. '{action.verb.value} sender on watch list'."
    klass = action.code // 100 if action.code else 5
    if action.dsn is None:
        return (
            f"'{action.code}' alone is read by Postfix as OK (the legacy all-numeric form), "
            f"so the mail would be accepted; add a text, e.g. '{action.code} {klass}.7.1 "
            "Access denied'."
        )
    return (
        f"'{action.code} {action.dsn}' has no text after the enhanced code; write one, "
        f"e.g. '{action.code} {action.dsn} Access denied'."
    )


def _check_code(code: int) -> None:
    first, second = code // 100, code // 10 % 10
    if code < 100 or code > 999:
        raise ReplyError(f"{code} is not an SMTP reply code: reply codes have three digits.")
    if first == 2:
        raise ReplyError(
            f"{code} is a success code: Postfix does not take 2xx actions and answers "
            "'451 4.3.5 Server configuration error'; to accept write OK, for no opinion DUNNO."
        )
    if first == 3:
        raise ReplyError(
            f"{code} is an intermediate reply (like 354 after DATA): Postfix answers "
            "'451 4.3.5 Server configuration error'; use a 4xx or 5xx code."
        )
    if first not in (4, 5):
        raise ReplyError(
            f"{code} is not an SMTP reply code: a policy may answer only 4xx (temporary) "
            "or 5xx (permanent) codes (RFC 5321 §4.2, policy-protocol.md §4.3)."
        )
    if second > 5:
        raise ReplyError(
            f"{code} is not a valid reply code: RFC 5321 §4.2 allows only 0-5 as the second "
            f"digit; use e.g. {first}50."
        )


def _check_dsn(action: Action) -> None:
    dsn = str(action.dsn)
    klass = _reply_class(action)
    match = registry.ENHANCED_SYNTAX.fullmatch(dsn)
    if match is not None and match.group(1) == "X":
        raise ReplyError(
            f"'{dsn}' is the registry's notation, where X stands for the class; write "
            f"{klass}{dsn[1:]} (the class must match the reply, here {klass})."
        )
    if match is None:
        raise ReplyError(
            f"'{dsn}' is not an enhanced status code: RFC 3463 wants class.subject.detail "
            "with class 2, 4 or 5 and one to three digits without leading zeros, e.g. "
            f"{klass}.7.1; Postfix would leave it in the text and send {klass}.7.1."
        )
    if int(match.group(1)) != klass:
        fixed = f"{klass}{dsn[1:]}"
        what = f"basic code {action.code}" if action.code else action.verb.value
        kind = "permanent (5)" if klass == 5 else "temporary (4)"
        suggestion = _join(_head(action.verb, action.code, fixed), action.text)
        raise ReplyError(
            f"enhanced code {dsn} has class {dsn[0]} but {what} is {kind}: Postfix would "
            f"silently send {fixed}; write '{suggestion}'."
        )
    if registry.enhanced(dsn) is None:
        raise ReplyError(_unregistered(dsn, klass, int(match.group(2))))


def _unregistered(dsn: str, klass: int, subject: int) -> str:
    known = registry.subject_codes(subject)
    if not known:
        return (
            f"enhanced code {dsn} is not registered: subjects are 0-7 (RFC 3463 §3); "
            f"use e.g. {klass}.7.1 (policy) or {klass}.0.0 (other)."
        )
    last = max(code.detail for code in known)
    return (
        f"enhanced code {dsn} is not in the IANA registry: registered details for subject "
        f"{subject} ({registry.SUBJECTS[subject]}) are {klass}.{subject}.0 to "
        f"{klass}.{subject}.{last}; use {klass}.{subject}.0 if nothing more specific fits "
        "('postgate codes' lists them)."
    )


def _check_text(action: Action) -> None:
    text = action.text
    bad = _CONTROL.search(text)
    if bad:
        raise ReplyError(_bad_character("the text", text, bad.start()))
    if text != text.strip():
        raise ReplyError(f"the text {text!r} starts or ends with spaces; remove them.")
    # Templated texts are measured without their placeholders, in _compile_template.
    limit = ADDRESS_MAX if action.verb in (Verb.REDIRECT, Verb.BCC) else MAX_TEXT
    if action.verb in _NO_TEMPLATE and len(text) > limit:
        raise ReplyError(_too_long(action.verb, len(text), limit))
    if action.is_reject and action.dsn is None and _DSN_LIKE.match(text):
        # Only reachable by building an Action directly: parse_action splits it off.
        raise ReplyError(f"the text {text!r} starts like an enhanced code; pass it as dsn.")


def _bad_character(what: str, text: str, index: int) -> str:
    char = text[index]
    if char.isprintable() and not char.isspace():
        return (
            f"{what} has the non-ASCII character {char!r} at position {index}: SMTP reply "
            "text is printable US-ASCII (RFC 5321 §4.2) and clients without SMTPUTF8 cannot "
            "take anything else; spell it in ASCII."
        )
    return (
        f"{what} has the control character {char!r} at position {index}: an action is "
        "one printable line (CR/LF break the protocol, Postfix turns TAB into a space); "
        "replace it with a space."
    )


def _too_long(verb: Verb, length: int, limit: int) -> str:
    if limit == ADDRESS_MAX:
        return (
            f"the {verb.value} address is {length} characters long; RFC 5321 §4.5.3.1.3 "
            f"allows {limit}."
        )
    return (
        f"the text is {length} characters long: with the longest prefix Postfix adds "
        "('<address>: Recipient address rejected: ', address up to RFC 5321's 256-octet "
        "path) the SMTP reply line would pass RFC 5321's 512 octets; keep it within "
        f"{limit} characters."
    )


def _no_check(_: str) -> None:
    return None


def _check_filter(text: str) -> None:
    if not _TRANSPORT.fullmatch(text):
        raise ReplyError(
            f"FILTER needs 'transport:destination' (a master.cf service name, a colon and "
            f"an optional next hop, no spaces), e.g. 'FILTER smtp:[127.0.0.1]:10025', not "
            f"{text!r}; without the colon Postfix ignores it with a warning."
        )


def _check_address(verb: Verb) -> Callable[[str], None]:
    def check(text: str) -> None:
        if not _ADDRESS.fullmatch(text):
            raise ReplyError(
                f"{verb.value} needs one bare address with an '@' (no spaces or <>), e.g. "
                f"'{verb.value} quarantine@example.com', not {text!r}; Postfix ignores it "
                "otherwise."
            )

    return check


def _check_header(text: str) -> None:
    match = _HEADER.fullmatch(text)
    if match is None or "{" in match.group(1) or "}" in match.group(1):
        raise ReplyError(
            f"PREPEND needs a header 'Name: value', e.g. 'PREPEND X-Postgate: tagged', not "
            f"{text!r}: the name is printable ASCII without ':', spaces or placeholders "
            "(RFC 5322 §2.2) and the value is not empty; Postfix ignores it otherwise."
        )


_OPERAND_CHECKS: Final[Mapping[Verb, Callable[[str], None]]] = MappingProxyType(
    {
        Verb.FILTER: _check_filter,
        Verb.REDIRECT: _check_address(Verb.REDIRECT),
        Verb.BCC: _check_address(Verb.BCC),
        Verb.PREPEND: _check_header,
    }
)


# ------------------------------------------------------------------- templates


def _compile_template(action: Action) -> _Template:
    """Split the text at its placeholders; ``{{``/``}}`` are literal braces."""
    if action.verb in _NO_TEMPLATE:
        return _Template((action.text,), ())
    literals: list[str] = []
    names: list[str] = []
    current: list[str] = []
    last = 0
    for token in _TEMPLATE_TOKEN.finditer(action.text):
        current.append(action.text[last : token.start()])
        last = token.end()
        if token.group(0) in ("{{", "}}"):
            current.append(token.group(0)[0])
            continue
        names.append(_placeholder(action.text, token))
        literals.append("".join(current))
        current = []
    current.append(action.text[last:])
    literals.append("".join(current))
    if len("".join(literals)) > MAX_TEXT:
        raise ReplyError(_too_long(action.verb, len("".join(literals)), MAX_TEXT))
    return _Template(tuple(literals), tuple(names))


def _placeholder(text: str, token: re.Match[str]) -> str:
    name = token.group(1)
    if name is None:
        raise ReplyError(
            f"unbalanced '{token.group(0)}' at position {token.start()} in {text!r}; write "
            "'{{' or '}}' for a literal brace, or a placeholder like {client_address}."
        )
    if name not in PLACEHOLDERS:
        close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
        hint = f"did you mean {{{close[0]}}}? " if close else ""
        raise ReplyError(
            f"unknown placeholder {{{name}}} in {text!r}; {hint}known placeholders: "
            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} ('{{' and '}}' for braces)."
        )
    return name


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


_GETTERS: Final[Mapping[str, Callable[[PolicyRequest, str], str]]] = MappingProxyType(
    {
        "rule": lambda _, rule_id: rule_id,
        "sender_domain": lambda request, _: _domain(request.get("sender")),
        "recipient_domain": lambda request, _: _domain(request.get("recipient")),
    }
)


def _value(name: str, request: PolicyRequest, rule_id: str) -> str:
    getter = _GETTERS.get(name)
    raw = getter(request, rule_id) if getter else request.get(name)
    return sanitise(raw, "<>" if name == "sender" else "unknown")


def sanitise(value: str, empty: str = "unknown", limit: int = VALUE_MAX) -> str:
    """Make a client-controlled value safe inside a reply text.

    Everything outside printable ASCII (controls, DEL, non-ASCII, the lone
    surrogates the decoder keeps for invalid UTF-8) becomes ``?``, so tampering
    stays visible; runs of spaces shrink to one; the result is cut to ``limit``.
    The raw value is cut first so a 16 KiB attribute costs no more than a short one.
    """
    cleaned = " ".join(_CONTROL.sub("?", value[: 4 * limit]).split())
    return _cap(cleaned, limit) if cleaned else empty


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


# --------------------------------------------------------------------- parsing


def parse_action(text: str) -> ParsedAction:
    """Read an action as written in the config; keywords are case-insensitive."""
    stripped = text.strip()
    if not stripped:
        raise ReplyError("the action is empty: Postfix reads an empty action as OK; write DUNNO.")
    bad = _CONTROL.search(stripped)
    if bad:
        raise ReplyError(_bad_character("the action", stripped, bad.start()))
    word, _, rest = stripped.partition(" ")
    rest = rest.lstrip(" ")
    action = _numeric(word, rest) if word.isdigit() else _worded(_keyword(word), rest)
    return ParsedAction(action, advise(action))


def _numeric(word: str, rest: str) -> Action:
    if len(word) != 3:
        raise ReplyError(
            f"'{word}' is not a three-digit reply code: Postfix reads an all-digit action "
            "as OK and anything else as a configuration error; write e.g. '550 5.7.1 Access "
            "denied'."
        )
    dsn, text = _split_dsn(rest)
    return Action(Verb.CODE, text, int(word), dsn)


def _worded(verb: Verb, rest: str) -> Action:
    if verb in _REPLY_CLASS:
        dsn, text = _split_dsn(rest)
        return Action(verb, text, None, dsn)
    return Action(verb, rest)


def _split_dsn(rest: str) -> tuple[str | None, str]:
    match = _DSN_LIKE.match(rest)
    if match is None:
        return None, rest
    return match.group(0), rest[match.end() :].lstrip(" ")


def _keyword(word: str) -> Verb:
    verb = _KEYWORDS.get(word.upper())
    if verb is None:
        raise ReplyError(_unknown_word(word))
    return verb


_SPECIAL_WORDS: Final = MappingProxyType(
    {
        "HANGUP": "HANGUP is an unsupported Postfix test feature that drops the connection "
        "without a reply; use '421 4.7.0 <text>' to reply and close the session.",
        "RELAY": "RELAY is an undocumented synonym of OK in Postfix 3.7; write OK.",
        "DELAY": "DELAY is compiled out of Postfix (DELAY_ACTION); use HOLD or DEFER_IF_PERMIT.",
        "PERMIT": "PERMIT is not an action; write OK to accept or DUNNO for no opinion.",
    }
)


def _unknown_word(word: str) -> str:
    special = _SPECIAL_WORDS.get(word.upper())
    if special:
        return special
    if ":" in word:
        return (
            f"'{word}' looks like a lookup table: Postfix refuses tables in a policy "
            "reply ('451 4.3.5 Server configuration error'); answer with an action."
        )
    close = difflib.get_close_matches(word.upper(), _KEYWORDS, n=1)
    if _RESTRICTION.fullmatch(word.lower()) and not difflib.get_close_matches(
        word.upper(), _KEYWORDS, n=1, cutoff=0.85
    ):
        return (
            f"'{word}' is a Postfix restriction name: Postfix would evaluate it as a nested "
            "restriction list in whatever context called the policy, which postgate cannot "
            "check; put restrictions in main.cf and answer with an action here."
        )
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"'{word}' is not an action Postfix knows (it would answer '451 4.3.5 Server "
        f"configuration error'); {hint}accepted: {', '.join(_KEYWORDS)}, or a 4xx/5xx code "
        "with a text, e.g. '550 5.7.1 Access denied'."
    )


# -------------------------------------------------------------------- warnings


def advise(action: Action) -> tuple[str, ...]:
    """Warnings for actions that are valid but probably not what was meant."""
    found: list[str] = []
    if action.code is not None:
        found += _advise_code(action.code, action.dsn)
    if action.dsn is not None:
        found += advise_dsn(action.dsn)
    return tuple(found)


def _advise_code(code: int, dsn: str | None) -> list[str]:
    known = registry.basic(code)
    if not registry.is_standard(code):
        return [_non_standard(code, dsn, known)]
    seed = registry.seed_reading(code)
    if seed is not None and seed.verdict is registry.Verdict.WRONG:
        return [f"{code} is often misread: {seed.correction} Use '{seed.use[0]}' for that."]
    return []


def _non_standard(code: int, dsn: str | None, known: registry.BasicCode | None) -> str:
    klass = code // 100
    lines = known.pairings if known else ()
    same = [line for line in lines if line.split()[1] == dsn]
    line = (same or list(lines) or [f"{klass}50 {dsn or f'{klass}.7.1'} Access denied"])[0]
    basic_code, pairing_dsn = line.split()[:2]
    example = f", e.g. '{line}'"
    if dsn is not None and pairing_dsn != dsn:  # keep the detail the author chose
        pairing_dsn, example = dsn, ""
    why = f" ({known.meaning})" if known else ""
    kind = "permanent" if klass == 5 else "temporary"
    return (
        f"{code} is not a standard SMTP reply code: no SMTP RFC defines it{why}; clients "
        f"see only a {kind} failure of unknown meaning. Use '{basic_code} {pairing_dsn}' "
        f"instead{example}."
    )


def advise_dsn(dsn: str) -> list[str]:
    """Context-free notes on a valid enhanced code (also used by ``postgate codes``)."""
    entry = registry.enhanced(dsn)
    if entry is None:
        return []
    klass = int(dsn[0])
    found: list[str] = []
    if entry.subject == 1 and entry.detail > 8:
        found.append(
            f"Postfix rewrites {dsn} in a policy reply to {klass}.1.0 in sender/recipient "
            f"restrictions and {klass}.0.0 elsewhere (smtpd_dsn_fix, policy-protocol.md "
            "§4.3): the client never sees it."
        )
    if "deprecated" in entry.title.lower():
        found.append(f"{dsn} is deprecated: {entry.description}")
    if entry.success_only:
        found.append(f"{dsn} means '{entry.title}', a success detail; it is odd in a failure.")
    if entry.key == "X.5.3" and klass == 5:
        found.append("too many recipients is temporary: RFC 5321 §4.5.3.1.10 wants 452 4.5.3.")
    return found


# ------------------------------------------------------------------- validator


def validate_reply_line(line: str) -> list[str]:
    """Problems with an action line as sent (reply-codes.md §6); empty when fine.

    Deliberately written apart from `Action`'s checks, with the spec's regexes,
    so tests can hold one against the other. Stricter than `parse_action`:
    non-standard codes are refused here (§6 "never emit").
    """
    if not line:
        return ["empty action (Postfix reads it as OK)"]
    problems = []
    if not re.fullmatch(r"[\x20-\x7e]+", line):
        problems.append("not one line of printable US-ASCII")
    word, _, rest = line.partition(" ")
    if re.fullmatch(r"[0-9]+", word):
        problems += _validate_code(word, rest)
    elif word in _REPLY_WORDS:
        problems += _validate_reply(_REPLY_WORDS[word], rest, text_required=False)
    elif word in ("OK", "DUNNO"):
        problems += [f"{word} takes no text"] if rest else []
    elif word in _KEYWORDS:
        problems += _validate_operand(word, rest)
    else:
        problems.append(f"unknown action word {word!r}")
    return problems


def _validate_code(word: str, rest: str) -> list[str]:
    if not re.fullmatch(r"[45][0-5][0-9]", word):
        return [f"basic code {word} is not ^[45][0-5][0-9]$"]
    problems = [] if registry.is_standard(int(word)) else [f"{word} is not a standard code"]
    return problems + _validate_reply(int(word[0]), rest, text_required=True)


def _validate_reply(klass: int, rest: str, *, text_required: bool) -> list[str]:
    problems = []
    head, _, text = rest.partition(" ")
    if re.fullmatch(r"[0-9X]+\.[0-9]+\.[0-9]+", head):
        if not re.fullmatch(r"[245]\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})", head):
            problems.append(f"enhanced code {head} has a bad syntax")
        elif int(head[0]) != klass:
            problems.append(f"enhanced code {head} does not match class {klass}")
        elif registry.enhanced("X" + head[1:]) is None:
            problems.append(f"enhanced code {head} is not registered")
    else:
        text = rest
    if text_required and not text:
        problems.append("a numeric reply needs a text")
    return problems + _validate_text(text)


def _validate_text(text: str) -> list[str]:
    problems = []
    if text != text.strip(" "):
        problems.append("text has surrounding spaces")
    if len(text) > MAX_TEXT:
        problems.append(f"text longer than {MAX_TEXT}")
    return problems


def _validate_operand(word: str, rest: str) -> list[str]:
    pattern = {
        "FILTER": r"[A-Za-z0-9][A-Za-z0-9._-]*:\S*",
        "REDIRECT": r"[^\s@<>]+@[^\s@<>]+",
        "BCC": r"[^\s@<>]+@[^\s@<>]+",
        "PREPEND": r"[!-9;-~]+: ?\S.*",
        "WARN": r"\S(.*\S)?",
        "INFO": r"\S(.*\S)?",
    }.get(word, r"(\S(.*\S)?)?")
    problems = [] if re.fullmatch(pattern, rest) else [f"bad {word} operand {rest!r}"]
    limit = ADDRESS_MAX if word in ("REDIRECT", "BCC") else MAX_TEXT
    return problems + ([f"{word} operand longer than {limit}"] if len(rest) > limit else [])


# ------------------------------------------------------------ Postfix's wording


def smtp_reply(line: str, name: str, context: str = "Recipient address") -> str | None:
    """The SMTP reply Postfix makes of a reject action line (policy-protocol.md §4.3).

    Default code, default enhanced code, class forced to the basic code's first
    digit, default text, and the ``<name>: <context> rejected: `` prefix; None
    for actions that send no reply of their own. smtpd_dsn_fix, soft_bounce and
    reject footers are left out.
    """
    word, _, rest = line.partition(" ")
    defaults = {"REJECT": (554, "Access denied"), "DEFER": (450, "Access denied")}
    if word.startswith("DEFER_IF_"):
        code, empty = 450, "Service unavailable"
    elif word in defaults:
        code, empty = defaults[word]
    elif re.fullmatch(r"[45][0-9][0-9]", word) and rest:
        code, empty = int(word), "Access denied"
    else:
        return None
    match = re.match(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}(?= |$)", rest)
    dsn = match.group(0) if match else "X.7.1"
    text = rest[match.end() :].lstrip(" ") if match else rest
    return f"{code} {code // 100}{dsn[1:]} <{name}>: {context} rejected: {text or empty}"


# ------------------------------------------------------------------- catalogue

OK: Final = Action(Verb.OK)
DUNNO: Final = Action(Verb.DUNNO)


def _catalogue() -> tuple[Mapping[str, Action], Mapping[str, str]]:
    rows = registry.read_table("named-replies.csv")
    actions = {row["name"]: parse_action(row["action"]).action for row in rows}
    scenarios = {row["name"]: row["scenario"] for row in rows}
    return MappingProxyType(actions), MappingProxyType(scenarios)


NAMED, SCENARIOS = _catalogue()


def named_reply(name: str) -> Action:
    """A catalogue reply by name (``reply = "relay_denied"`` in the config)."""
    action = NAMED.get(name.strip().lower())
    if action is not None:
        return action
    close = difflib.get_close_matches(name.strip().lower(), NAMED, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ReplyError(
        f"there is no named reply {name!r}; {hint}'postgate codes --named' lists all "
        f"{len(NAMED)}, and a literal reply like '550 5.7.1 Access denied' works too."
    )


__all__ = [
    "DUNNO",
    "MAX_TEXT",
    "NAMED",
    "OK",
    "PLACEHOLDERS",
    "SCENARIOS",
    "Action",
    "ParsedAction",
    "ReplyError",
    "Verb",
    "advise",
    "advise_dsn",
    "named_reply",
    "parse_action",
    "sanitise",
    "smtp_reply",
    "validate_reply_line",
]
