"""``postgate codes``: the user's code table as a tool that says where it is wrong.

Explains basic reply codes (RFC 5321), enhanced status codes (RFC 3463, IANA
registry), whole reply lines and named replies, from the facts in
`postgate.replies.registry` and the checks in `postgate.replies`. Pure: writes to the
stream it is given and returns the exit status (0 explained, 1 unknown or
invalid, 2 usage), so cli.py only wires arguments.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from postgate.replies import planned, registry
from postgate.replies.advice import advise_dsn
from postgate.replies.catalogue import NAMED, OFFERED, SCENARIOS
from postgate.replies.parsing import parse_action
from postgate.replies.sent import smtp_reply
from postgate.replies.text import DSN_LIKE, ReplyError
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import TextIO

USAGE: Final = """\
usage: postgate codes                  list basic and enhanced codes
       postgate codes CODE...          explain codes, e.g. 552 or 5.7.1 or X.7.1
       postgate codes "REPLY LINE"     check a reply, e.g. "554 5.7.1 Relay access denied"
       postgate codes NAME             show a named reply, e.g. relay_denied
       postgate codes --named          list the named replies
exit status: 0 explained, 1 unknown or invalid, 2 usage error
"""

_BASIC: Final = re.compile(r"[0-9]+")
_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")
_CATEGORIES: Final = {
    0: "syntax",
    1: "information",
    2: "connection",
    3: "unspecified",
    4: "unspecified",
    5: "mail system",
}
_SEVERITIES: Final = {
    2: "positive completion",
    3: "positive intermediate (more input expected)",
    4: "transient negative completion (retry may succeed)",
    5: "permanent negative completion (do not retry unchanged)",
}
_VERDICTS: Final = {
    registry.Verdict.CORRECT: "correct",
    registry.Verdict.PARTLY_WRONG: "partly wrong",
    registry.Verdict.WRONG: "wrong",
    registry.Verdict.NON_STANDARD: "wrong, not a standard code",
}
# What a reply line is rendered with when it has placeholders.
_SAMPLE: Final = PolicyRequest(
    {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.9",
        "client_name": "mail.example.net",
        "helo_name": "mail.example.net",
        "sender": "sender@example.net",
        "recipient": "someone@example.com",
        "queue_id": "4Xyz1234",
    }
)


def main(argv: list[str], out: TextIO) -> int:
    if argv in (["-h"], ["--help"]):
        out.write(USAGE)
        return 0
    if argv == ["--named"]:
        _list_named(out)
        return 0
    if any(arg.startswith("-") for arg in argv):
        out.write(f"postgate codes: unknown option or misplaced --named\n{USAGE}")
        return 2
    if not argv:
        _list_all(out)
        return 0
    return max(_explain(query, out) for query in _queries(argv))


def _queries(argv: list[str]) -> list[str]:
    """Codes one by one; anything else is a reply line split by the shell."""
    if all(_BASIC.fullmatch(arg) or DSN_LIKE.fullmatch(arg) for arg in argv):
        return argv
    return [" ".join(argv)]


def _explain(query: str, out: TextIO) -> int:
    query = query.strip()
    if _BASIC.fullmatch(query):
        return _explain_basic(query, out)
    if DSN_LIKE.fullmatch(query):
        return _explain_enhanced(query, out)
    if _NAME.fullmatch(query) and query in NAMED:
        return _explain_named(query, out)
    return _explain_line(query, out)


# ----------------------------------------------------------------- basic codes


def _explain_basic(query: str, out: TextIO) -> int:
    code = int(query)
    problem = _basic_syntax(query)
    if problem:
        _write(out, [f"{query}: {problem}"])
        return 1
    known = registry.basic(code)
    lines = _describe_basic(code, known) + _seed_lines(code)
    _write(out, lines)
    return 0 if known else 1


def _basic_syntax(query: str) -> str | None:
    if len(query) != 3 or query[0] not in "2345":
        return "not an SMTP reply code: three digits, the first 2-5 (RFC 5321 §4.2)"
    if query[1] not in "012345":
        return "not an SMTP reply code: the second digit is 0-5 (RFC 5321 §4.2)"
    return None


def _describe_basic(code: int, known: registry.BasicCode | None) -> list[str]:
    first, second = code // 100, code // 10 % 10
    shape = f"  class {first}yz: {_SEVERITIES[first]}; x{second}z: {_CATEGORIES[second]}"
    if known is None:
        return [
            f"{code}: unknown: not defined by RFC 5321 or a standards-track extension",
            shape,
            f"  clients act on the first digit only; use a standard code, e.g. {first}50",
        ]
    lines = [f"{code}: {known.standing.label}; {known.source}", f"  meaning: {known.meaning}"]
    lines.append(shape)
    if known.pairings:
        label = "use instead" if not known.standard else "typical replies"
        lines.append(f"  {label}: {'; '.join(known.pairings)}")
    lines.append(f"  as a policy action: {_policy_use(code, known)}")
    return lines


def _policy_use(code: int, known: registry.BasicCode) -> str:
    if code // 100 in (2, 3):
        return "refused (Postfix accepts only 4xx and 5xx replies; write OK or DUNNO)"
    if not known.standard:
        return "accepted with a warning naming the standard pairing"
    if code in (421, 521):
        return "accepted; Postfix closes the SMTP connection after this reply"
    example = (*known.pairings, f"{code} {code // 100}.7.1 Access denied")[0]
    return f"accepted with a text, e.g. {example}"


def _seed_lines(code: int) -> list[str]:
    seed = registry.seed_reading(code)
    if seed is None:
        return []
    lines = [f'  seed table: "{seed.seed_meaning}" -> {_VERDICTS[seed.verdict]}']
    lines.append(f"    {seed.correction}")
    if seed.use and seed.verdict is not registry.Verdict.CORRECT:
        lines.append(f"    use: {'; '.join(seed.use)}")
    return lines + _synonym_note(code)


def _synonym_note(code: int) -> list[str]:
    """The seed table claims "512" and "5.1.2" are the same; show what each really is."""
    dotted = ".".join(str(code))
    entry = registry.enhanced(dotted)
    if entry is None:
        return []
    note = (
        f"    not a synonym of {dotted}: that is an enhanced status code (RFC 3463) meaning "
        f"'{entry.title}'; the two systems share only the first digit"
    )
    if registry.is_standard(code):
        return [note]
    return [f"{note}; to mean {dotted}, send {_pairing(entry, code // 100)} {dotted}"]


# -------------------------------------------------------------- enhanced codes


def _explain_enhanced(query: str, out: TextIO) -> int:
    match = registry.ENHANCED_SYNTAX.fullmatch(query)
    if match is None:
        _write(out, [f"{query}: not an enhanced status code: {_enhanced_syntax_help()}"])
        return 1
    entry = registry.enhanced(query)
    if entry is None:
        _write(out, _unregistered(query, int(match.group(2))))
        return 1
    _write(out, _describe_enhanced(query, entry) + _reverse_synonym(query))
    return 0


def _enhanced_syntax_help() -> str:
    return (
        "class.subject.detail, class 2, 4 or 5 (X for any), one to three digits each "
        "without leading zeros (RFC 3463 §2), e.g. 5.7.1"
    )


def _unregistered(query: str, subject: int) -> list[str]:
    known = registry.subject_codes(subject)
    if not known:
        return [f"{query}: not registered: subjects are 0-7 (RFC 3463 §3)"]
    first = query.split(".", 1)[0]
    details = ", ".join(e.with_class(int(first)) if first != "X" else e.key for e in known)
    return [
        f"{query}: not in the IANA registry of enhanced status codes (do not send it)",
        f"  subject {subject}: {registry.SUBJECTS[subject]}; registered: {details}",
    ]


def _describe_enhanced(query: str, entry: registry.EnhancedCode) -> list[str]:
    klass = query[0]
    lines = [f"{query}: registered, {entry.reference}: {entry.title}"]
    if klass == "X":
        lines.append("  class X: any of 2 (success), 4 (temporary), 5 (permanent)")
    else:
        lines.append(f"  class {klass}: {registry.CLASSES[int(klass)]}")
    lines.append(f"  subject {entry.subject}: {registry.SUBJECTS[entry.subject]}")
    lines.append(f"  meaning: {entry.description}")
    lines.append(f"  basic codes seen with it (IANA, informative): {entry.basic_codes}")
    if klass in "45":
        lines.append(f"  pair with a {klass}xx code, e.g. {_pairing(entry, int(klass))} {query}")
    lines += [f"  note: {note}" for note in (advise_dsn(query) if klass != "X" else [])]
    users = [name for name, action in NAMED.items() if action.dsn == query]
    if users:
        lines.append(f"  named replies using it: {', '.join(users)}")
    return lines


def _pairing(entry: registry.EnhancedCode, klass: int) -> str:
    """A standard basic code of the right class the registry has seen with this detail."""
    seen = re.findall(r"\b[245][0-9][0-9]\b", entry.basic_codes)
    usable = [t for t in seen if int(t) // 100 == klass and registry.is_standard(int(t))]
    generic = f"{klass}50"
    return generic if generic in usable or not usable else usable[0]


def _reverse_synonym(query: str) -> list[str]:
    digits = query.replace(".", "")
    if query[0] == "X" or len(digits) != 3 or registry.seed_reading(int(digits)) is None:
        return []
    seed = registry.seed_reading(int(digits))
    assert seed is not None
    note = (
        f"  the seed table calls {digits} and {query} synonyms: they are not. {digits} reads "
        f"there as '{seed.seed_meaning}' ({_VERDICTS[seed.verdict]}); the two code systems "
        "share only the first digit (RFC 5321 §4.2, RFC 3463 §2)"
    )
    return [note]


# ---------------------------------------------------------- lines and names


def _explain_line(query: str, out: TextIO) -> int:
    try:
        parsed = parse_action(query)
    except ReplyError as exc:
        _write(out, [f'"{query}": refused', f"  {exc}"])
        return 1
    action = parsed.action
    kind = "numeric reply" if action.code is not None else f"{action.verb.value} action"
    lines = [f'"{query}": valid {kind}: {action.line}']
    lines += _line_codes(action.code, action.dsn)
    seen = smtp_reply(action.render(_SAMPLE, "RULE_ID"), "someone@example.com")
    if seen:
        lines.append(f"  a client sees at RCPT: {seen}")
    lines += [f"  warning: {warning}" for warning in parsed.warnings]
    _write(out, lines)
    return 0


def _line_codes(code: int | None, dsn: str | None) -> list[str]:
    lines = []
    if code is not None:
        known = registry.basic(code)
        label = f"{known.standing.label}: {known.meaning}" if known else "unknown code"
        lines.append(f"  {code}: {label}")
    if dsn is not None:
        entry = registry.enhanced(dsn)
        lines.append(f"  {dsn}: {entry.title if entry else 'unregistered'}")
    return lines


def _explain_named(name: str, out: TextIO) -> int:
    action = NAMED[name]
    _write(out, [f"{name}: {SCENARIOS[name]}"])
    if name in planned.REPLIES:
        _write(out, [f"  not offered in rules yet: {planned.REPLIES[name]}"])
    return _explain_line(action.line, out)


# -------------------------------------------------------------------- listings


def _list_all(out: TextIO) -> None:
    standard = [b for b in registry.BASIC if b.standard]
    other = [b for b in registry.BASIC if not b.standard]
    _write(out, ["Basic reply codes (RFC 5321 §4.2 and standards-track extensions)"])
    _write(out, (f"  {b.code}  {b.meaning}" for b in standard))
    _write(out, ["", "Non-standard codes (do not send; 'postgate codes N' names the fix)"])
    _write(out, (f"  {b.code}  {b.meaning}" for b in other))
    _write(out, ["", "Enhanced status codes (IANA registry; X is the class 2, 4 or 5)"])
    _write(out, (f"  {e.key:<7} {e.title}" for e in registry.ENHANCED))


def _list_named(out: TextIO) -> None:
    width = max(len(name) for name in NAMED)
    _write(out, (f"{name:<{width}}  {NAMED[name].line}" for name in OFFERED))
    _write(out, ["", "Not offered until postgate has the feature (rules may not name them):"])
    _write(out, (f"{n:<{width}}  {NAMED[n].line}" for n in NAMED if n not in OFFERED))


def _write(out: TextIO, lines: Iterable[str]) -> None:
    out.writelines(f"{line}\n" for line in lines)
