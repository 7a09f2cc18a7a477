"""The three checks every admin writes, as one line each (docs/rules.md, Shortcuts).

``blocklist``, ``size_limit`` and ``relay_check`` expand at load into ordinary
conditions, which `postgate show` prints like any other rule, with a default
reply that an ``action`` or ``reply`` on the same rule overrides. Defaults
are named replies of the catalogue (docs/replies.md, Named replies); a HELO blocklist
has no catalogue entry, so its default is spelled out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import check_keys
from postgate.rules import match
from postgate.rules.conditions import (
    Context,
    inline_domains,
    inline_networks,
    list_condition,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.rules.match import Condition

# (key, value) as the rule itself would write it: reply = NAME or action = TEXT.
Default = tuple[str, str]
_CLIENT: Final = ("reply", "client_blocked")
_SENDER: Final = ("reply", "sender_blocked")
_RECIPIENT: Final = ("reply", "recipient_blocked")
BLOCKLIST_REPLIES: Final[Mapping[str, Default]] = {
    "client_address": _CLIENT,
    "client_name": _CLIENT,
    "reverse_client_name": _CLIENT,
    "helo_name": ("action", "554 5.7.1 Access denied: HELO name blocked by local policy"),
    "sender": _SENDER,
    "sender_domain": _SENDER,
    "recipient": _RECIPIENT,
    "recipient_domain": _RECIPIENT,
}
SIZE_REPLY: Final = ("reply", "message_too_large")
RELAY_REPLY: Final = ("reply", "relay_denied")


@dataclass(frozen=True, slots=True)
class Expansion:
    """What a shortcut stands for: conditions, a default reply, implied states."""

    conditions: tuple[Condition, ...]
    default: Default
    states: tuple[str, ...] = ()


def expand(key: str, value: Any, place: str, ctx: Context) -> Expansion | None:
    """Expand shortcut ``key``; None (with problems reported) when it is broken."""
    return _EXPANDERS[key](value, place, ctx)


def _blocklist(value: Any, place: str, ctx: Context) -> Expansion | None:
    if not _is_table(value, place, ctx, 'blocklist = { attribute = "...", list = "..." }'):
        return None
    check_keys(value, ("attribute", "list"), place, ctx.problems)
    name, list_name = value.get("attribute"), value.get("list")
    if not isinstance(name, str) or name not in BLOCKLIST_REPLIES:
        ctx.error(f"{place}.attribute", f"must be one of {', '.join(BLOCKLIST_REPLIES)}")
        return None
    if not isinstance(list_name, str):
        ctx.error(f"{place}.list", "must be the name of a list ([lists.NAME])")
        return None
    condition = list_condition(name, list_name, f"{place}.list", ctx)
    return None if condition is None else Expansion((condition,), BLOCKLIST_REPLIES[name])


def _size_limit(value: Any, place: str, ctx: Context) -> Expansion | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        ctx.error(place, "must be a size in bytes (a whole number, e.g. 10485760 for 10 MiB)")
        return None
    return Expansion((match.compare("size", "gt", value),), SIZE_REPLY)


def _relay_check(value: Any, place: str, ctx: Context) -> Expansion | None:
    example = 'relay_check = { local_domains = "LIST", mynetworks = "LIST" }'
    if not _is_table(value, place, ctx, example):
        return None
    check_keys(value, ("local_domains", "mynetworks"), place, ctx.problems)
    if "local_domains" not in value:
        ctx.error(place, f"needs local_domains: {example}")
        return None
    parts = [_local(value["local_domains"], f"{place}.local_domains", ctx)]
    if "mynetworks" in value:
        parts.append(_mynetworks(value["mynetworks"], f"{place}.mynetworks", ctx))
    parts.append(match.empty("sasl_username", want=True))
    if any(part is None for part in parts):
        return None
    conditions = tuple(p for p in parts if p is not None)
    return Expansion(conditions, RELAY_REPLY, states=("RCPT",))


def _local(value: Any, place: str, ctx: Context) -> Condition | None:
    if isinstance(value, str):
        found = list_condition("recipient_domain", value, place, ctx)
    elif _string_list(value):
        names = inline_domains(value, place, ctx)
        found = None if names is None else match.equals("recipient_domain", names, names)
    else:
        ctx.error(place, "must be a list name or a list of domains")
        return None
    return None if found is None else match.negate(found)


def _mynetworks(value: Any, place: str, ctx: Context) -> Condition | None:
    if isinstance(value, str):
        found = list_condition("client_address", value, place, ctx)
    elif _string_list(value):
        nets = inline_networks(value, place, ctx)
        shown = match.show_values(value)
        found = None if nets is None else match.in_networks("client_address", nets, shown)
    else:
        ctx.error(place, "must be a list name or a list of networks")
        return None
    return None if found is None else match.negate(found)


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _is_table(value: Any, place: str, ctx: Context, example: str) -> bool:
    if not isinstance(value, dict):
        ctx.error(place, f"must be a table: {example}")
        return False
    return True


_EXPANDERS: Final[Mapping[str, Callable[[Any, str, Context], Expansion | None]]] = {
    "blocklist": _blocklist,
    "size_limit": _size_limit,
    "relay_check": _relay_check,
}
SHORTCUTS: Final = tuple(_EXPANDERS)
