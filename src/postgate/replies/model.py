"""The action model: what Postfix accepts from a policy server, valid by construction.

`Verb` lists the actions of access(5) that SMTPD_POLICY_README lets a policy
server answer with; an `Action` that exists is one Postfix reads as intended:
``__post_init__`` refuses anything else with a `ReplyError` whose message says
what to write instead. Actions without a template carry their encoded reply in
``wire``, so answering costs nothing. Reading action text is `parsing`'s job,
which imports this module and not the other way round. No Twisted.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from postgate.replies import registry
from postgate.replies.templates import Template, compile_template
from postgate.replies.text import (
    ADDRESS_MAX,
    CONTROL,
    DSN_LIKE,
    MAX_TEXT,
    ReplyError,
    bad_character,
    too_long,
)
from postgate.wire.codec import encode

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.wire.codec import PolicyRequest


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
# with the class Postfix gives them (SMTPD_POLICY_README, access(5)).
REPLY_CLASS: Final = MappingProxyType(
    {
        Verb.REJECT: 5,
        Verb.DEFER: 4,
        Verb.DEFER_IF_REJECT: 4,
        Verb.DEFER_IF_PERMIT: 4,
    }
)
KEYWORDS: Final = MappingProxyType({v.value: v for v in Verb if v is not Verb.CODE})
_BARE: Final = frozenset({Verb.OK, Verb.DUNNO})
_NEEDS_TEXT: Final = frozenset({Verb.CODE, Verb.WARN, Verb.INFO})
_NO_TEMPLATE: Final = frozenset({Verb.FILTER, Verb.REDIRECT, Verb.BCC})
_TRANSPORT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*:\S*")
_ADDRESS: Final = re.compile(r"[^\s@<>{}]+@[^\s@<>{}]+")
_HEADER: Final = re.compile(r"([!-9;-~]+):[ ]?(\S.*)")


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
    _template: Template | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check(self)
        template = _split_template(self)
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
        return self.verb is Verb.CODE or self.verb in REPLY_CLASS

    @property
    def has_template(self) -> bool:
        return self._template is not None

    def render(
        self, request: PolicyRequest, rule_id: str, values: Mapping[str, str] | None = None
    ) -> str:
        """The action text sent for this request: values sanitised, length capped.

        ``values`` are the placeholders a rule's checks filled ({limit},
        {retry}, {zone}...); a placeholder they do not fill reads the request.
        """
        template = self._template
        if template is None:
            return self.sent
        return template.render(request, rule_id, values)

    def encode_for(self, request: PolicyRequest, rule_id: str) -> bytes:
        if self.wire:
            return self.wire
        return encode(self.render(request, rule_id))


# ---------------------------------------------------------------- construction


def _head(verb: Verb, code: int | None, dsn: str | None) -> str:
    word = str(code) if verb is Verb.CODE else verb.value
    return f"{word} {dsn}" if dsn else word


def _join(head: str, text: str) -> str:
    return f"{head} {text}" if text else head


def _split_template(action: Action) -> Template:
    # FILTER, REDIRECT and BCC operands are routing, never filled from a request.
    if action.verb in _NO_TEMPLATE:
        return Template((action.text,), ())
    return compile_template(action.text)


def _reply_class(action: Action) -> int:
    if action.code is not None:
        return action.code // 100
    return REPLY_CLASS[action.verb]


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
        f"e.g. '{_text_example(action.code, action.dsn, klass)}'."
    )


def _text_example(code: int | None, dsn: str, klass: int) -> str:
    """The reply with a text added, fixed until it is valid itself (``550 4.7.1`` -> 5.7.1)."""
    for candidate in (f"{klass}{dsn[1:]}", f"{klass}.7.1"):
        try:
            Action(Verb.CODE, "Access denied", code, candidate)
        except ReplyError:
            continue
        return f"{code} {candidate} Access denied"
    return f"{code} {klass}.7.1 Access denied"


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
            "or 5xx (permanent) codes (RFC 5321 §4.2)."
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
    bad = CONTROL.search(text)
    if bad:
        raise ReplyError(bad_character("the text", text, bad.start()))
    if text != text.strip():
        raise ReplyError(f"the text {text!r} starts or ends with spaces; remove them.")
    # Templated texts are measured without their placeholders, in compile_template.
    limit = ADDRESS_MAX if action.verb in (Verb.REDIRECT, Verb.BCC) else MAX_TEXT
    if action.verb in _NO_TEMPLATE and len(text) > limit:
        raise ReplyError(too_long(len(text), limit, action.verb.value))
    if action.is_reject and action.dsn is None and DSN_LIKE.match(text):
        # Only reachable by building an Action directly: parse_action splits it off.
        raise ReplyError(f"the text {text!r} starts like an enhanced code; pass it as dsn.")


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


OK: Final = Action(Verb.OK)
DUNNO: Final = Action(Verb.DUNNO)

__all__ = [
    "DUNNO",
    "KEYWORDS",
    "OK",
    "REPLY_CLASS",
    "Action",
    "ReplyError",
    "Verb",
]
