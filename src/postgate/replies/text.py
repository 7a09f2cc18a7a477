"""What any action text must be: one line of printable ASCII that fits a reply line.

The limits every other replies module measures against, the two character
patterns they share, and `ReplyError`, raised by each of them. Imports only the
code registry (for the longest enhanced code).
"""

from __future__ import annotations

import re
from typing import Final

from postgate.replies import registry

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including CRLF.
# §4.5.3.1.3: a path ("<local@domain>") is at most 256 octets.
SMTP_LINE_MAX: Final = 512
PATH_MAX: Final = 256
ADDRESS_MAX: Final = PATH_MAX - 2
# The longest prefix Postfix puts before our text, at RCPT (docs/replies.md).
WORST_PREFIX: Final = "<" + "x" * ADDRESS_MAX + ">: Recipient address rejected: "
# "NNN " + longest registered enhanced code + " " + prefix + text + CRLF <= 512.
MAX_TEXT: Final = (
    SMTP_LINE_MAX - len("554 ") - (registry.LONGEST_ENHANCED + 1) - len(WORST_PREFIX) - 2
)

# Postfix's enhanced-code test (dsn_split): a dotted triple followed by a space
# or the end. Anything shaped like one is checked, so a typo cannot slip into
# the text unnoticed.
DSN_LIKE: Final = re.compile(r"[0-9X]+\.[0-9]+\.[0-9]+(?= |$)")
CONTROL: Final = re.compile(r"[^\x20-\x7e]")


class ReplyError(ValueError):
    """An action Postfix would refuse, misread or answer wrongly; the message says the fix."""


def bad_character(what: str, text: str, index: int) -> str:
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


def too_long(length: int, limit: int, verb: str = "") -> str:
    """``verb`` names the action whose address is too long (limit `ADDRESS_MAX`)."""
    if limit == ADDRESS_MAX:
        return (
            f"the {verb} address is {length} characters long; RFC 5321 §4.5.3.1.3 allows {limit}."
        )
    return (
        f"the text is {length} characters long: with the longest prefix Postfix adds "
        "('<address>: Recipient address rejected: ', address up to RFC 5321's 256-octet "
        "path) the SMTP reply line would pass RFC 5321's 512 octets; keep it within "
        f"{limit} characters."
    )


__all__ = [
    "ADDRESS_MAX",
    "CONTROL",
    "DSN_LIKE",
    "MAX_TEXT",
    "PATH_MAX",
    "SMTP_LINE_MAX",
    "WORST_PREFIX",
    "ReplyError",
    "bad_character",
    "too_long",
]
