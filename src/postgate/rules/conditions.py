"""One condition of a rule, from its TOML value to a compiled `Condition`.

``helo_name = "localhost"`` and ``helo_name = ["a", "b"]`` test equality (ORed);
a table of operators (``{ list = "x" }``, ``{ regex = "..." }``, ``{ gt = 5 }``,
``{ empty = true, negate = true }``) tests each operator and ANDs them. Each
mistake is reported at its place (``rules[3].helo_name.regex``) and the
condition is then dropped, so the rest of the file is still checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys, suggest
from postgate.rules import match, postgrey
from postgate.rules.attributes import ADDRESS, DOMAIN, FINGERPRINT, FOLDED, IP, KNOWN, NUMERIC
from postgate.rules.domains import DomainSet
from postgate.rules.facts import fold
from postgate.rules.lists import NamedList, PatternSet, parse_entry
from postgate.rules.networks import Network, NetworkSet
from postgate.rules.patterns import Pattern, PatternError, compile_pattern

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.config.problems import Problems
    from postgate.rules.match import Condition

OPERATORS: Final = (
    "equals",
    "list",
    "regex",
    "network",
    "domain",
    "subdomains",
    *match.COMPARISONS,
    "empty",
    "present",
    "negate",
)

# Which attributes each list kind may test; the hint says what to write instead.
_LIST_FITS: Final[Mapping[str, tuple[frozenset[str], str]]] = {
    "network": (IP, "network lists test client_address or server_address"),
    "domain": (DOMAIN, "domain lists test domains: use sender_domain or recipient_domain"),
    "address": (frozenset({"sender", "recipient", "sasl_sender"}), "address lists test addresses"),
    "fingerprint": (FINGERPRINT, "fingerprint lists test ccert_(pubkey_)fingerprint"),
    "string": (frozenset(KNOWN), ""),
    "pattern": (frozenset(KNOWN) - NUMERIC, "pattern lists test text, not numbers"),
    postgrey.CLIENTS: (
        frozenset({"client_name", "client_address"}),
        "postgrey client lists test client_name and client_address together",
    ),
    postgrey.RECIPIENTS: (frozenset({"recipient"}), "postgrey recipient lists test recipient"),
}


@dataclass(slots=True)
class Context:
    """What compiling a condition needs beyond its own value."""

    lists: Mapping[str, NamedList]
    problems: Problems
    used: set[str] = field(default_factory=set)
    # The whole config document, for checks that read a top-level table
    # ([state], [dns]) beside their own rule's value.
    doc: Mapping[str, Any] = field(default_factory=dict)

    def error(self, place: str, reason: str) -> None:
        self.problems.error(place, reason)


def attribute_error(name: str) -> str:
    return f"unknown attribute{suggest(name, KNOWN)}; see docs/rules.md for the names"


def compile_condition(name: str, value: Any, place: str, ctx: Context) -> Condition | None:
    """Compile ``name = value`` (``name`` already known to be an attribute)."""
    if isinstance(value, dict):
        return _table(name, value, place, ctx)
    return _equality(name, value, place, ctx)


def _equality(name: str, value: Any, place: str, ctx: Context) -> Condition | None:
    if isinstance(value, int) and not isinstance(value, bool) and name in NUMERIC:
        return match.compare(name, "eq", value)
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        ctx.error(place, "must be a string, a list of strings, or a table of operators")
        return None
    dead = [found for v in values if (found := never_equal(name, v)) is not None]
    for reason, certain in dead:
        (ctx.error if certain else ctx.problems.warn)(place, reason)
    if any(certain for _, certain in dead):
        return None
    return match.equals(name, [fold(name, v) for v in values], values)


def never_equal(name: str, value: str) -> tuple[str, bool] | None:
    """Why ``name = value`` looks like a pattern that equality never matches, and how sure.

    A network, an ``@domain`` or a wildcard compared whole with what Postfix
    sends never holds (postfwd and access(5) habits); the reason carries the
    fix. Only a HELO may literally be anything, so there it is a warning.
    """
    if name in IP and "/" in value:
        reason = (
            f"{value!r} is a network, but equality compares the whole address and never "
            f'holds: write {name} = {{ network = ["{value}"] }} or use a network list'
        )
        return reason, True
    if name in ADDRESS and value.startswith("@"):
        domain = f'{name}_domain = "{value[1:]}" or ' if name != "sasl_sender" else ""
        reason = (
            f"{value!r} is compared with the whole address and never holds: write "
            f"{domain}an address list with the entry {value}"
        )
        return reason, True
    if name in DOMAIN and (value.startswith(".") or "*" in value):
        base = value.lstrip("*.") or "example.com"
        reason = (
            f"{value!r} is compared whole, not as a wildcard, and never matches a real name: "
            f'write {name} = {{ domain = ["{base}"], subdomains = true }} or a regex'
        )
        return reason, name != "helo_name"
    return None


def _table(name: str, table: dict[str, Any], place: str, ctx: Context) -> Condition | None:
    check_keys(table, OPERATORS, place, ctx.problems)
    negated = Values(table, place, ctx.problems).flag("negate")
    parts: list[Condition | None] = []
    for op, builder in _BUILDERS.items():
        if op in table:
            parts.append(builder(name, table, f"{place}.{op}", ctx))
    if "subdomains" in table and "domain" not in table:
        ctx.error(f"{place}.subdomains", "only goes with domain = [...]")
    if not parts:
        ctx.error(place, f"needs an operator: {', '.join(o for o in OPERATORS if o != 'negate')}")
        return None
    if any(part is None for part in parts):
        return None
    condition = match.all_of([p for p in parts if p is not None])
    return match.negate(condition) if negated else condition


def _operands(table: Mapping[str, Any], place: str, ctx: Context) -> Values:
    """The operator table an operator at ``place`` belongs to, for its flags."""
    return Values(table, place.rsplit(".", 1)[0], ctx.problems)


def _strings(value: Any, place: str, ctx: Context) -> list[str] | None:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        ctx.error(place, "must be a string or a non-empty list of strings")
        return None
    return values


def _equals(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    return _equality(name, table["equals"], place, ctx)


def _list(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    list_name = table["list"]
    if not isinstance(list_name, str):
        ctx.error(place, "must be the name of a list ([lists.NAME])")
        return None
    return list_condition(name, list_name, place, ctx)


def list_condition(name: str, list_name: str, place: str, ctx: Context) -> Condition | None:
    """``name`` is in the named list; also used by the shortcuts."""
    named = ctx.lists.get(list_name)
    ctx.used.add(list_name)
    if named is None:
        ctx.error(place, f"no list {list_name!r}{suggest(list_name, ctx.lists)}")
        return None
    fits, hint = _LIST_FITS[named.kind]
    if name not in fits:
        ctx.error(place, f"{named.kind} list {list_name!r} cannot test {name}: {hint}")
        return None
    text = f"list {named.describe()}"
    entries = named.entries
    if isinstance(entries, NetworkSet):
        return match.in_networks(name, entries, text)
    if isinstance(entries, PatternSet):
        return match.matches(name, entries.patterns, text)
    if isinstance(entries, postgrey.PostgreyClients):
        return _postgrey_clients(entries, text)
    if named.kind == "string" and name in FOLDED and isinstance(entries, frozenset):
        entries = frozenset(fold(name, e) for e in entries)
    return match.in_keys(name, entries, text)


def _postgrey_clients(clients: postgrey.PostgreyClients, text: str) -> Condition:
    """postgrey's client test: the name (or a name above it), a pattern, or the address."""
    parts = [match.in_keys("client_name", clients.names, text)]
    if clients.patterns:
        parts.append(match.matches("client_name", postgrey.combined(clients.patterns), text))
    parts.append(match.in_networks("client_address", clients.networks, text))
    return match.Condition(
        f"client_name or client_address in {text}", match.AnyOf(tuple(p.code for p in parts))
    )


def _regex(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    sources = _strings(table["regex"], place, ctx)
    if sources is None:
        return None
    patterns: list[Pattern] = []
    for source in sources:
        try:
            patterns.append(compile_pattern(source))
        except PatternError as exc:
            ctx.error(place, f"/{source}/: {exc}")
    if len(patterns) != len(sources):
        return None
    return match.matches(name, tuple(patterns))


def _network(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    if name not in IP:
        ctx.error(place, f"network tests client_address or server_address, not {name}")
        return None
    items = _strings(table["network"], place, ctx)
    networks = inline_networks(items or [], place, ctx)
    if items is None or networks is None:
        return None
    return match.in_networks(name, networks, match.show_values(items))


def inline_networks(items: list[str], place: str, ctx: Context) -> NetworkSet | None:
    """Networks written in the rule itself; None when any is invalid."""
    found: list[Network] = []
    for index, item in enumerate(items):
        entry, problem = parse_entry("network", item)
        if isinstance(entry, Network):
            found.append(entry)
        if problem:
            report = ctx.problems.warn if entry is not None else ctx.problems.error
            report(f"{place}[{index}]", problem)
    return NetworkSet.build(found) if len(found) == len(items) else None


def _domain(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    if name not in DOMAIN:
        ctx.error(place, f"domain tests a domain attribute ({', '.join(sorted(DOMAIN))})")
        return None
    items = _strings(table["domain"], place, ctx)
    subdomains = _operands(table, place, ctx).flag("subdomains")
    if items is None:
        return None
    names = inline_domains(items, place, ctx)
    if names is None:
        return None
    below = " or below" if subdomains else ""
    return match.in_keys(name, DomainSet(names, subdomains), match.show_values(items) + below)


def inline_domains(items: list[str], place: str, ctx: Context) -> frozenset[str] | None:
    """Domains written in the rule itself; None when any is invalid."""
    found = []
    for index, item in enumerate(items):
        entry, problem = parse_entry("domain", item)
        if problem:
            ctx.error(f"{place}[{index}]", problem)
        else:
            found.append(str(entry))
    return frozenset(found) if len(found) == len(items) else None


def _comparison(op: str) -> Callable[[str, Mapping[str, Any], str, Context], Condition | None]:
    def build(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
        limit = table[op]
        if name not in NUMERIC:
            ctx.error(place, f"numbers are compared only for {', '.join(sorted(NUMERIC))}")
            return None
        if isinstance(limit, bool) or not isinstance(limit, int):
            ctx.error(place, f"must be a whole number, not {limit!r}")
            return None
        return match.compare(name, op, limit)

    return build


def _empty(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    return match.empty(name, _operands(table, place, ctx).flag("empty"))


def _present(name: str, table: Mapping[str, Any], place: str, ctx: Context) -> Condition | None:
    return match.present(name, _operands(table, place, ctx).flag("present"))


_BUILDERS: Final[
    Mapping[str, Callable[[str, Mapping[str, Any], str, Context], Condition | None]]
] = {
    "equals": _equals,
    "list": _list,
    "regex": _regex,
    "network": _network,
    "domain": _domain,
    **{op: _comparison(op) for op in match.COMPARISONS},
    "empty": _empty,
    "present": _present,
}

__all__ = ["Context", "attribute_error", "compile_condition", "list_condition"]
