"""The named replies: ``reply = "relay_denied"`` instead of a literal action.

Read once at import from ``data/named-replies.csv`` (name, action, scenario)
through `parsing.parse_action`, so a catalogue row is checked like any
configured action; docs/replies.md lists them.
"""

from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from postgate.replies import planned, registry
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
# What a rule may name: the catalogue without the replies of planned features.
OFFERED: Final = tuple(name for name in NAMED if name not in planned.REPLIES)


def named_reply(name: str) -> Action:
    """A catalogue reply by name (``reply = "relay_denied"`` in the config).

    Replies of features postgate does not have yet (`planned.REPLIES`) are
    kept for ``postgate codes`` but not offered: a rule answering
    ``greylisted`` without greylisting would only defer every mail.
    """
    key = name.strip().lower()
    if key in planned.REPLIES:
        raise ReplyError(f"the named reply {key!r} is not offered: {planned.REPLIES[key]}.")
    action = NAMED.get(key)
    if action is not None:
        return action
    close = difflib.get_close_matches(key, OFFERED, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ReplyError(
        f"there is no named reply {name!r}; {hint}'postgate codes --named' lists all "
        f"{len(OFFERED)}, and a literal reply like '550 5.7.1 Access denied' works too."
    )


__all__ = ["NAMED", "OFFERED", "SCENARIOS", "named_reply"]
