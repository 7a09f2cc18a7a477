"""Action lines as sent, read apart from `Action`: the validator and Postfix's reply.

Two readers that deliberately do not share `parsing.parse_action`, because
each is a check on it rather than another way to do its job:

* `validate_reply_line` applies the published rules for a line postgate may
  send (docs/replies.md, "Validation"), written separately with its own
  regexes so tests can hold `Action`'s checks against it; it is stricter
  (non-standard codes are errors here, warnings there).
* `smtp_reply` reads a line the way Postfix does (SMTPD_POLICY_README,
  access(5)): it takes lines postgate refuses, such as a class mismatch that
  Postfix silently corrects, because its job is to show what a client sees.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

from postgate.replies import registry
from postgate.replies.model import KEYWORDS, REPLY_CLASS
from postgate.replies.text import ADDRESS_MAX, MAX_TEXT

_REPLY_WORDS: Final = MappingProxyType({v.value: k for v, k in REPLY_CLASS.items()})


def validate_reply_line(line: str) -> list[str]:
    """Problems with an action line as sent; empty when fine.

    Stricter than `parse_action`: a non-standard code is never sent, so it is a
    problem here where the parser only warns.
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
    elif word in KEYWORDS:
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


def smtp_reply(line: str, name: str, context: str = "Recipient address") -> str | None:
    """The SMTP reply Postfix makes of a reject action line.

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


__all__ = ["smtp_reply", "validate_reply_line"]
