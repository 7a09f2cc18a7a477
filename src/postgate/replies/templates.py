"""``{placeholder}`` templates: split once at load, filled with sanitised request values.

A value a client sent ends up in the reply only through `sanitise`, so no
request can put a line break, a non-ASCII character or more than `VALUE_MAX`
characters into what Postfix sends, and the whole text is cut to fit the
reply line (`text.MAX_TEXT`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from postgate.replies.text import CONTROL, DSN_LIKE, MAX_TEXT, ReplyError, too_long

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.wire.codec import PolicyRequest

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
    # Filled by a rule's limit (docs/rules.md, Rate limits); "unknown" elsewhere.
    "limit",
    "window",
    "retry",
    # Filled by a DNS-list check (docs/rules.md, DNS lists).
    "dnsbl_zone",
    "dnsbl_text",
    "dnsbl_reason",
    "dnsbl_what",
    "dnsbl_score",
)

# Placeholders that may be empty: "; TEXT" after the zone, or nothing, as Postfix
# writes ${rbl_reason?; $rbl_reason}.
_EMPTY: Final = {"dnsbl_reason": ""}
_TOKEN: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# postfwd's and shell's variables: ``$$sender``, ``$sender``, ``${sender}``.
_DOLLAR: Final = re.compile(r"\$(\$?)(\{?)([A-Za-z_][A-Za-z0-9_]*)(\}?)")


@dataclass(frozen=True, slots=True)
class Template:
    """A text split at its placeholders, with the action head to put before it.

    ``literals`` has one more item than ``names``. ``pinned`` is the head with
    Postfix's default enhanced code, used when the rendered text starts like
    one: Postfix would otherwise take a client's value as the code (dsn_split).
    """

    literals: tuple[str, ...]
    names: tuple[str, ...]
    head: str = ""
    pinned: str | None = None

    def render(
        self, request: PolicyRequest, rule_id: str, values: Mapping[str, str] | None = None
    ) -> str:
        parts = [self.head, " ", self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            if values and name in values:
                parts += (sanitise(values[name], _EMPTY.get(name, "unknown")), literal)
            else:
                parts += (_value(name, request, rule_id), literal)
        line = "".join(parts)
        # A placeholder that renders empty ({dnsbl_reason} without TXT) must
        # not leave edge spaces or no text: both make an invalid reply.
        text = line[len(self.head) + 1 :]
        if not text or text[0] == " " or text[-1] == " ":
            line = f"{self.head} {text.strip(' ') or 'unknown'}"
        if len(line) - len(self.head) - 1 > MAX_TEXT:
            line = self.head + " " + cap(line[len(self.head) + 1 :], MAX_TEXT)
        if self.pinned and DSN_LIKE.match(line, len(self.head) + 1):
            return self.pinned + line[len(self.head) :]
        return line


def compile_template(text: str) -> Template:
    """Split ``text`` at its placeholders; ``{{``/``}}`` are literal braces."""
    _refuse_dollar_variables(text)
    literals: list[str] = []
    names: list[str] = []
    current: list[str] = []
    last = 0
    for token in _TOKEN.finditer(text):
        current.append(text[last : token.start()])
        last = token.end()
        if token.group(0) in ("{{", "}}"):
            current.append(token.group(0)[0])
            continue
        names.append(_placeholder(text, token))
        literals.append("".join(current))
        current = []
    current.append(text[last:])
    literals.append("".join(current))
    # Measured without the placeholders: their values are capped when rendered.
    if len("".join(literals)) > MAX_TEXT:
        raise ReplyError(too_long(len("".join(literals)), MAX_TEXT))
    return Template(tuple(literals), tuple(names))


def _refuse_dollar_variables(text: str) -> None:
    """A ``$name`` would be sent literally: Postfix and postgate expand only ``{name}``.

    ``$5`` or ``$HOME`` stay literal text; ``$$x``, ``${x}`` and ``$name`` with
    a placeholder's (or an attribute's lower_case) name are a variable meant.
    """
    for found in _DOLLAR.finditer(text):
        doubled, brace, name, _ = found.groups()
        if not (doubled or brace or name in PLACEHOLDERS or ("_" in name and name.islower())):
            continue
        close = difflib.get_close_matches(name.lower(), PLACEHOLDERS, n=1)
        fix = f"write {{{close[0]}}}" if close else "write a placeholder"
        raise ReplyError(
            f"{found.group(0)!r} in {text!r} would be sent literally: postgate fills only "
            f"{{name}} placeholders; {fix} (placeholders: "
            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})."
        )


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
            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} ('{{{{' and '}}}}' for braces)."
        )
    return name


def _domain(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


_GETTERS: Final[Mapping[str, Callable[[PolicyRequest, str], str]]] = MappingProxyType(
    {
        "rule": lambda _, rule_id: rule_id,
        "sender_domain": lambda request, _: _domain(request.get("sender")),
        "recipient_domain": lambda request, _: _domain(request.get("recipient")),
        # Postfix's reject_rbl_client wording when no DNS-list check filled it.
        "dnsbl_what": lambda request, _: f"Client host [{request.get('client_address')}]",
    }
)


def _value(name: str, request: PolicyRequest, rule_id: str) -> str:
    getter = _GETTERS.get(name)
    raw = getter(request, rule_id) if getter else request.get(name)
    if name in _EMPTY:
        return sanitise(raw, "")  # no TXT: Postfix leaves the reason out
    return sanitise(raw, "<>" if name == "sender" else "unknown")


def sanitise(value: str, empty: str = "unknown", limit: int = VALUE_MAX) -> str:
    """Make a client-controlled value safe inside a reply text.

    Everything outside printable ASCII (controls, DEL, non-ASCII, the lone
    surrogates the decoder keeps for invalid UTF-8) becomes ``?``, so tampering
    stays visible; runs of spaces shrink to one; the result is cut to ``limit``.
    The raw value is cut first so a 16 KiB attribute costs no more than a short one.
    """
    cleaned = " ".join(CONTROL.sub("?", value[: 4 * limit]).split())
    return cap(cleaned, limit) if cleaned else empty


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


__all__ = [
    "ELLIPSIS",
    "PLACEHOLDERS",
    "VALUE_MAX",
    "Template",
    "cap",
    "compile_template",
    "sanitise",
]
