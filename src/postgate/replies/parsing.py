"""Reading an action as written in the config: ``550 5.7.1 Access denied``, ``DUNNO``.

The one reader of action text (config values, catalogue rows, ``postgate
codes``): keywords are case-insensitive, a leading dotted triple is the
enhanced code, and a word Postfix would not take is refused with what it
would do instead and what to write. Builds `model.Action`, which checks the
rest, and attaches `advice.advise`'s warnings.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from postgate.replies.advice import advise
from postgate.replies.model import KEYWORDS, REPLY_CLASS, Action, Verb
from postgate.replies.text import CONTROL, DSN_LIKE, ReplyError, bad_character

_RESTRICTION: Final = re.compile(r"(permit|reject|defer|check|warn_if_reject|sleep)(_\w+)?")


@dataclass(frozen=True, slots=True)
class ParsedAction:
    action: Action
    warnings: tuple[str, ...] = ()


def parse_action(text: str) -> ParsedAction:
    """Read an action as written in the config; keywords are case-insensitive."""
    stripped = text.strip()
    if not stripped:
        raise ReplyError("the action is empty: Postfix reads an empty action as OK; write DUNNO.")
    bad = CONTROL.search(stripped)
    if bad:
        raise ReplyError(bad_character("the action", stripped, bad.start()))
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
    if verb in REPLY_CLASS:
        dsn, text = _split_dsn(rest)
        return Action(verb, text, None, dsn)
    return Action(verb, rest)


def _split_dsn(rest: str) -> tuple[str | None, str]:
    match = DSN_LIKE.match(rest)
    if match is None:
        return None, rest
    return match.group(0), rest[match.end() :].lstrip(" ")


def _keyword(word: str) -> Verb:
    verb = KEYWORDS.get(word.upper())
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
    close = difflib.get_close_matches(word.upper(), KEYWORDS, n=1)
    if _RESTRICTION.fullmatch(word.lower()) and not difflib.get_close_matches(
        word.upper(), KEYWORDS, n=1, cutoff=0.85
    ):
        return (
            f"'{word}' is a Postfix restriction name: Postfix would evaluate it as a nested "
            "restriction list in whatever context called the policy, which postgate cannot "
            "check; put restrictions in main.cf and answer with an action here."
        )
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"'{word}' is not an action Postfix knows (it would answer '451 4.3.5 Server "
        f"configuration error'); {hint}accepted: {', '.join(KEYWORDS)}, or a 4xx/5xx code "
        "with a text, e.g. '550 5.7.1 Access denied'."
    )


__all__ = ["ParsedAction", "parse_action"]
