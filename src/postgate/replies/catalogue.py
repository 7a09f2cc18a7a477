"""The named replies: ``reply = "relay_denied"`` instead of a literal action.

Read once at import from ``data/named-replies.csv`` (name, action, scenario)
through `parsing.parse_action`, so a catalogue row is checked like any
configured action; docs/replies.md lists them.
"""

from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import TYPE_CHECKING

from postgate.replies import registry
from postgate.replies.parsing import parse_action
from postgate.replies.text import ReplyError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from postgate.replies.model import Action


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


__all__ = ["NAMED", "SCENARIOS", "named_reply"]
