"""Which Postfix restriction lists a ruleset needs postgate in, for ``postgate check``.

A limit hooked at a stage where it silently does nothing is the commonest
trap of policy daemons: a limit is checked at RCPT (smtpd_recipient_restrictions)
and charged at END-OF-MESSAGE (smtpd_end_of_data_restrictions), and without
the second it never counts anything (postconf(5); docs/postfix.md, Rate limits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postgate.rules.limits import LimitCheck
from postgate.rules.model import Rule
from postgate.rules.program import walk

if TYPE_CHECKING:
    from postgate.rules.engine import Ruleset


def needed_lists(ruleset: Ruleset) -> list[str]:
    """One line per restriction list the ruleset's limits need, naming the rules."""
    limited = [
        node.id
        for node in walk(ruleset.nodes)
        if isinstance(node, Rule) and any(isinstance(c, LimitCheck) for c in node.checks)
    ]
    if not limited:
        return []
    rules = ", ".join(limited)
    return [
        f"smtpd_recipient_restrictions: check_policy_service (limits checked at RCPT: {rules})",
        f"smtpd_end_of_data_restrictions: check_policy_service (limits charged: {rules})",
    ]


__all__ = ["needed_lists"]
