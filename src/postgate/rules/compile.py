"""From the ``[lists]`` and ``[[rules]]`` of a config to a `Ruleset`.

Every problem goes into the caller's `Problems` with its place
(``rules[3].helo_name.regex``) and compiling goes on, so one ``postgate
check`` shows every mistake; the returned Ruleset is then only for the
caller to throw away. Places count rules from 0, like TOML array indexes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import check_keys, read_action, suggest
from postgate.replies import planned
from postgate.replies.catalogue import named_reply
from postgate.replies.model import Action, Verb
from postgate.replies.text import ReplyError
from postgate.rules import match
from postgate.rules.attributes import KNOWN, STATES
from postgate.rules.checks import COMPILERS
from postgate.rules.conditions import Context, attribute_error, compile_condition
from postgate.rules.engine import Ruleset
from postgate.rules.facts import fold
from postgate.rules.limits import EOM, NEVER_CHARGED
from postgate.rules.lists import load_lists
from postgate.rules.model import DEFAULT_RULE, Group, Node, Rule
from postgate.rules.shortcuts import SHORTCUTS, Expansion, expand

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from postgate.config.problems import Problems
    from postgate.rules.match import Condition
    from postgate.rules.model import Check

RULE_KEYS: Final = ("id", "action", "reply", "state", "rules", "default", "default_reply", "mode")
# mode = "observe": log and count what the rule would answer, answer nothing
# (docs/operations.md); "enforce", the default, answers.
MODES: Final = ("enforce", "observe")
MAX_DEPTH: Final = 4
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _states(states: Sequence[str]) -> Condition:
    return match.equals("protocol_state", [fold("protocol_state", s) for s in states], states)


def compile_ruleset(doc: Mapping[str, Any], base_dir: Path, problems: Problems) -> Ruleset:
    """Compile ``doc["lists"]`` and ``doc["rules"]``; other keys are not ours."""
    lists = load_lists(doc.get("lists"), base_dir, problems)
    compiler = _Compiler(Context(lists, problems, doc=doc))
    raw = doc.get("rules", [])
    if not isinstance(raw, list):
        problems.error("rules", "must be an array of tables ([[rules]])")
        raw = []
    nodes = compiler.nodes(raw, "rules", 0, None)
    for name in sorted(set(lists) - compiler.ctx.used):
        problems.warn(f"lists.{name}", "no rule uses this list")
    return Ruleset(nodes, lists)


@dataclass(slots=True)
class _Compiler:
    ctx: Context
    ids: set[str] = field(default_factory=set)

    def nodes(
        self, raw: list[Any], place: str, depth: int, outer: frozenset[str] | None
    ) -> tuple[Node, ...]:
        """Compile a list of rules; ``outer`` is the states an enclosing group allows."""
        built = []
        for index, table in enumerate(raw):
            where = f"{place}[{index}]"
            errors = len(self.ctx.problems.errors)
            node = self.node(table, where, depth, outer)
            if node is not None:
                built.append(node)
            if node is not None and errors == len(self.ctx.problems.errors):
                self._warn_unreachable(node, raw, index, where)
        return tuple(built)

    def _warn_unreachable(self, node: Node, raw: list[Any], index: int, place: str) -> None:
        if (
            isinstance(node, Rule)
            and not node.conditions
            and not node.observe
            and index + 1 < len(raw)
        ):
            self.ctx.problems.warn(place, f"{node.id} always matches: the rules after it never run")

    def node(self, table: Any, place: str, depth: int, outer: frozenset[str] | None) -> Node | None:
        if not isinstance(table, dict):
            self.ctx.error(place, "a rule must be a table ([[rules]])")
            return None
        rule_id = self._id(table, place)
        self._check_keys(table, place)
        observe = self._mode(table, place)
        shortcut = self._shortcut(table, place)
        conditions = self._conditions(table, place, shortcut)
        states = _reachable_states(table, shortcut, outer)
        if "rules" in table:
            group = self._group(table, place, (depth, states), rule_id, conditions)
            return None if group is None else dataclasses.replace(group, observe=observe)
        action = self._rule_action(table, place, shortcut)
        if action is not None:
            where = _key_place(table, place, ("action", "reply"))
            header_action_problem(action, states, where, self.ctx.problems)
        checks = self._checks(table, place)
        if "limit" in table and states is not None and EOM not in states:
            self.ctx.problems.warn(f"{place}.state", NEVER_CHARGED)
        if rule_id is None or conditions is None or action is None or checks is None:
            return None
        kind = next((key for key in SHORTCUTS if key in table), "")
        return Rule(rule_id, conditions, action, kind, checks, observe)

    def _mode(self, table: Mapping[str, Any], place: str) -> bool:
        mode = table.get("mode", "enforce")
        if mode not in MODES:
            self.ctx.error(f"{place}.mode", f"{mode!r} is not one of {', '.join(MODES)}")
        return bool(mode == "observe")

    def _checks(self, table: Mapping[str, Any], place: str) -> tuple[Check, ...] | None:
        """The rule's checks on gathered facts, in key order; None if one is broken."""
        found = [
            COMPILERS[key](value, f"{place}.{key}", self.ctx)
            for key, value in table.items()
            if key in COMPILERS
        ]
        if any(check is None for check in found):
            return None
        return tuple(check for check in found if check is not None)

    def _id(self, table: Mapping[str, Any], place: str) -> str | None:
        rule_id = table.get("id")
        if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
            shown = "missing" if rule_id is None else repr(rule_id)
            self.ctx.error(
                f"{place}.id", f"{shown}: give every rule an id of letters, digits, _ . -"
            )
            return None
        if rule_id in self.ids or rule_id == DEFAULT_RULE:
            self.ctx.error(f"{place}.id", f"{rule_id!r} is already used; ids must be unique")
            return None
        self.ids.add(rule_id)
        return rule_id

    def _check_keys(self, table: Mapping[str, Any], place: str) -> None:
        for key in table:
            if key.lower() in planned.KEYS:
                self.ctx.error(f"{place}.{key}", planned.KEYS[key.lower()])
        rest = {k: v for k, v in table.items() if k not in KNOWN and k.lower() not in planned.KEYS}
        allowed = RULE_KEYS + SHORTCUTS + tuple(COMPILERS)
        check_keys(rest, allowed, place, self.ctx.problems, otherwise=attribute_error)
        found = [key for key in SHORTCUTS if key in table]
        if len(found) > 1:
            self.ctx.error(place, f"one shortcut per rule, not {' and '.join(found)}")

    def _shortcut(self, table: Mapping[str, Any], place: str) -> Expansion | bool | None:
        """The expansion, False when the rule has none, None when it is broken."""
        for key in SHORTCUTS:
            if key in table:
                return expand(key, table[key], f"{place}.{key}", self.ctx)
        return False

    def _conditions(
        self, table: Mapping[str, Any], place: str, shortcut: Expansion | bool | None
    ) -> tuple[Condition, ...] | None:
        found: list[Condition | None] = []
        if "state" in table:
            found.append(self._state(table["state"], f"{place}.state"))
        elif isinstance(shortcut, Expansion) and shortcut.states:
            found.append(_states(shortcut.states))
        if isinstance(shortcut, Expansion):
            found += shortcut.conditions
        for key, value in table.items():
            if key in KNOWN:
                found.append(compile_condition(key, value, f"{place}.{key}", self.ctx))
        if shortcut is None or any(c is None for c in found):
            return None
        return tuple(c for c in found if c is not None)

    def _state(self, value: Any, place: str) -> Condition | None:
        states = [value] if isinstance(value, str) else value
        if not isinstance(states, list) or not states:
            self.ctx.error(place, f"must be a state or a list of: {', '.join(STATES)}")
            return None
        good = []
        for item in states:
            state = item.upper() if isinstance(item, str) else item
            if state not in STATES:
                hint = suggest(str(state), STATES)
                self.ctx.error(place, f"{item!r} is not a protocol state{hint}; see {STATES}")
            else:
                good.append(state)
        if len(good) != len(states):
            return None
        return _states(good)

    def _group(
        self,
        table: Mapping[str, Any],
        place: str,
        level: tuple[int, frozenset[str] | None],
        rule_id: str | None,
        conditions: tuple[Condition, ...] | None,
    ) -> Group | None:
        depth, states = level
        for key in ("action", "reply", *SHORTCUTS, *COMPILERS):
            if key in table:
                self.ctx.error(
                    f"{place}.{key}",
                    "a group has no own action or shortcut; "
                    "put it in a rule inside, or use default = ...",
                )
        children_raw = table["rules"]
        if depth + 1 >= MAX_DEPTH:
            self.ctx.error(f"{place}.rules", f"groups nest at most {MAX_DEPTH} deep")
            return None
        if not isinstance(children_raw, list) or not children_raw:
            self.ctx.error(f"{place}.rules", "must be a non-empty array of rules ([[...rules]])")
            return None
        children = self.nodes(children_raw, f"{place}.rules", depth + 1, states)
        default = self._one_action(table, place, ("default", "default_reply"), required=False)
        if isinstance(default, Action):
            where = _key_place(table, place, ("default", "default_reply"))
            header_action_problem(default, states, where, self.ctx.problems)
        if rule_id is None or conditions is None or default is False:
            return None
        return Group(
            rule_id, conditions, children, default if isinstance(default, Action) else None
        )

    def _rule_action(
        self, table: Mapping[str, Any], place: str, shortcut: Expansion | bool | None
    ) -> Action | None:
        for key in ("default", "default_reply"):
            if key in table:
                self.ctx.error(f"{place}.{key}", "only a group (with rules = [...]) has a default")
        # A broken shortcut was reported already; a limit answers rate_limited.
        required = shortcut is False and "limit" not in table
        found = self._one_action(table, place, ("action", "reply"), required=required)
        if isinstance(found, Action):
            return found
        if found is None and "limit" in table:
            return named_reply("rate_limited")
        if found is None and isinstance(shortcut, Expansion):
            return self._default(shortcut, place)
        return None

    def _default(self, shortcut: Expansion, place: str) -> Action | None:
        key, value = shortcut.default
        if key != "reply":
            return read_action(value, place, self.ctx.problems)
        found = self._named(value, place)
        return found if isinstance(found, Action) else None

    def _one_action(
        self, table: Mapping[str, Any], place: str, keys: tuple[str, str], *, required: bool
    ) -> Action | bool | None:
        """The action under ``keys`` (literal, named); None if absent, False if broken."""
        literal, named = keys
        if literal in table and named in table:
            self.ctx.error(place, f"give either {literal} or {named}, not both")
            return False
        if literal in table:
            return read_action(table[literal], f"{place}.{literal}", self.ctx.problems) or False
        if named in table:
            return self._named(table[named], f"{place}.{named}")
        if required:
            self.ctx.error(
                place, f'needs an action: {literal} = "554 5.7.1 ..." or {named} = "NAME"'
            )
            return False
        return None

    def _named(self, value: Any, place: str) -> Action | bool:
        if not isinstance(value, str):
            self.ctx.error(place, f"must be the name of a reply, not {value!r}")
            return False
        try:
            return named_reply(value)
        except ReplyError as exc:
            self.ctx.error(place, str(exc))
            return False


def _key_place(table: Mapping[str, Any], place: str, keys: tuple[str, str]) -> str:
    """The place of the key an action came from; the rule's own for a shortcut default."""
    return next((f"{place}.{key}" for key in keys if key in table), place)


def _reachable_states(
    table: Mapping[str, Any], shortcut: Expansion | bool | None, outer: frozenset[str] | None
) -> frozenset[str] | None:
    """The protocol states a rule can match at; None when nothing limits them."""
    own: frozenset[str] | None = None
    value = table.get("state")
    if isinstance(value, str | list):
        items = [value] if isinstance(value, str) else value
        own = frozenset(v.upper() for v in items if isinstance(v, str))
    elif isinstance(shortcut, Expansion) and shortcut.states:
        own = frozenset(shortcut.states)
    if outer is None or own is None:
        return own if outer is None else outer
    return own & outer


_ONE_PER_MESSAGE: Final = 'use state = "DATA" for one header per message'


def header_action_problem(
    action: Action, states: frozenset[str] | None, place: str, problems: Problems
) -> None:
    """PREPEND where Postfix ignores it (END-OF-MESSAGE) or repeats it (RCPT).

    smtpd applies PREPEND only before smtpd_end_of_data_restrictions (it logs
    a warning and adds nothing there), and at RCPT once for each recipient.
    """
    if action.verb is not Verb.PREPEND:
        return
    if states is None:
        problems.warn(
            place,
            "PREPEND without a state answers at every stage Postfix asks: once per "
            f"recipient at RCPT, and never at END-OF-MESSAGE; {_ONE_PER_MESSAGE}",
        )
    elif "END-OF-MESSAGE" in states:
        problems.error(
            place,
            "Postfix ignores PREPEND at END-OF-MESSAGE (it logs 'action PREPEND must be "
            f"used before smtpd_end_of_data_restrictions' and adds nothing); {_ONE_PER_MESSAGE}",
        )
    elif "RCPT" in states:
        problems.warn(
            place,
            f"PREPEND at RCPT adds the header once per recipient; {_ONE_PER_MESSAGE}",
        )
