"""Actions postgate may answer, valid by construction.

MINIMAL FIRST CUT: the full catalogue, registry checks and templates are
being written (issue 3). The public names below are the contract the rule
engine and the server use and must keep their signatures:

* ``Action``: frozen; ``Action.wire`` is the encoded reply when the action has
  no template; ``Action.encode_for(request)`` works for every action.
* ``parse_action(text) -> ParsedAction`` raises ``ReplyError``.
* ``named_reply(name) -> Action`` raises ``ReplyError``.
* ``DUNNO``, ``OK``: constants.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from postgate.protocol import encode

if TYPE_CHECKING:
    from postgate.protocol import PolicyRequest


class ReplyError(ValueError):
    """An action Postfix would refuse, misread or answer wrongly."""


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


@dataclass(frozen=True, slots=True)
class Action:
    verb: Verb
    text: str = ""
    code: int | None = None
    dsn: str | None = None
    wire: bytes = field(default=b"", compare=False, repr=False)

    @property
    def line(self) -> str:
        """The value after ``action=``."""
        if self.verb is Verb.CODE:
            return " ".join(p for p in (str(self.code), self.dsn or "", self.text) if p)
        head = self.verb.value
        parts = [head] + ([self.dsn] if self.dsn else []) + ([self.text] if self.text else [])
        return " ".join(parts)

    def encode_for(self, request: PolicyRequest) -> bytes:  # noqa: ARG002
        return self.wire or encode(self.line)


def _make(verb: Verb, text: str = "", code: int | None = None, dsn: str | None = None) -> Action:
    probe = Action(verb, text, code, dsn)
    return Action(verb, text, code, dsn, encode(probe.line))


@dataclass(frozen=True, slots=True)
class ParsedAction:
    action: Action
    warnings: tuple[str, ...] = ()


OK = _make(Verb.OK)
DUNNO = _make(Verb.DUNNO)

_CODE = re.compile(r"^([45][0-5][0-9])(?: ([245]\.\d{1,3}\.\d{1,3}))?(?: (.+))?$")


def parse_action(text: str) -> ParsedAction:
    text = text.strip()
    m = _CODE.match(text)
    if m:
        code, dsn, rest = int(m.group(1)), m.group(2), m.group(3) or ""
        if not rest:
            raise ReplyError("a numeric reply needs text after the code")
        if dsn and dsn[0] != str(code)[0]:
            raise ReplyError(f"enhanced code {dsn} does not match class of {code}")
        return ParsedAction(_make(Verb.CODE, rest, code, dsn))
    word, _, rest = text.partition(" ")
    try:
        verb = Verb(word.upper())
    except ValueError:
        raise ReplyError(f"{word!r} is not an action Postfix knows") from None
    return ParsedAction(_make(verb, rest))


def named_reply(name: str) -> Action:
    raise ReplyError(f"no named reply {name!r}")
