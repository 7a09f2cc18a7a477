"""What the replay and pytest-plugin tests share: a small ruleset and policy files for it."""

from __future__ import annotations

RULES = """\
[lists.ours]
type = "domain"
items = ["example.com"]

[[rules]]
id = "BLOCKED"
client_address = "192.0.2.66"
action = "554 5.7.1 Client host rejected: blocked"

[[rules]]
id = "TRAP"
recipient = "trap@example.com"
action = "550 5.7.1 Recipient address rejected: trap {recipient}"

[[rules]]
id = "OURS"
recipient_domain = { list = "ours" }
action = "DUNNO"

[[rules]]
id = "RELAY"
action = "554 5.7.1 Relay access denied"
"""

WITHOUT_TRAP = RULES.replace(
    '[[rules]]\nid = "TRAP"\nrecipient = "trap@example.com"\n'
    'action = "550 5.7.1 Recipient address rejected: trap {recipient}"\n\n',
    "",
)


def block(recipient: str, client: str = "198.51.100.1", *notes: str) -> str:
    lines = [f"# {note}" for note in notes]
    lines += [
        "request=smtpd_access_policy",
        "protocol_state=RCPT",
        f"client_address={client}",
        "sender=someone@example.net",
        f"recipient={recipient}",
    ]
    return "\n".join(lines) + "\n\n"


GOOD = (
    block("a@example.com", "198.51.100.1", "name: ours", "expect: DUNNO", "expect-rule: OURS")
    + block("x@example.org", "198.51.100.2", "expect: 554 5.7.1 Relay access denied")
    + block(
        "trap@example.com",
        "198.51.100.3",
        "expect: 550 5.7.1 Recipient address rejected: trap trap@example.com",
    )
    + block("y@example.com", "192.0.2.66", "expect-rule: BLOCKED")
    + block("z@example.com", "198.51.100.5")
)
BAD = block("x@example.org", "198.51.100.9", "name: wrong", "expect: DUNNO", "expect-rule: OURS")
