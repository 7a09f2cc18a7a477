"""What the rules tests share: compiling TOML text, the reference ruleset, deciding.

Plain functions rather than fixtures, so module-level constants and
parametrize lists can use them too.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from postgate.config.problems import Problems
from postgate.rules import Ruleset, compile_ruleset
from postgate.rules.model import DEFAULT_RULE, Group, Rule
from postgate.rules.program import walk
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from postgate.rules.model import Decision, Node

ROOT = Path(__file__).parents[3]
REFERENCE = ROOT / "conf" / "examples" / "reference.toml"


class CompileError(AssertionError):
    """The TOML text a test wrote did not compile cleanly; the message lists why."""


def compile_problems(
    text: str, base_dir: Path | None = None, source: str = "postgate.toml"
) -> tuple[Ruleset, Problems]:
    """Compile ``text`` as the config ``source`` whose lists live in ``base_dir``."""
    problems = Problems(source)
    ruleset = compile_ruleset(tomllib.loads(text), base_dir or Path(), problems)
    return ruleset, problems


def compile_toml(text: str, base_dir: Path | None = None) -> Ruleset:
    """Compile ``text``, raising `CompileError` with every error when there is one."""
    ruleset, problems = compile_problems(text, base_dir)
    if problems.errors:
        raise CompileError("\n".join(str(p) for p in problems.errors))
    return ruleset


@functools.cache
def reference_compiled() -> tuple[Ruleset, Problems]:
    """The shipped reference config, compiled once per test run."""
    return compile_problems(REFERENCE.read_text(), REFERENCE.parent, str(REFERENCE))


def reference_ruleset() -> Ruleset:
    """The reference ruleset, raising `CompileError` if the config has errors."""
    ruleset, problems = reference_compiled()
    if problems.errors:
        raise CompileError("\n".join(str(p) for p in problems.errors))
    return ruleset


def decide(ruleset: Ruleset, **attrs: str) -> Decision:
    """The decision for a request made of ``attrs`` alone."""
    return ruleset.decide(PolicyRequest(attrs))


def rule_of(ruleset: Ruleset, **attrs: str) -> str:
    """The id of the rule that decides a request made of ``attrs``."""
    return decide(ruleset, **attrs).rule


def outcome(ruleset: Ruleset, **attrs: str) -> tuple[str, str]:
    """(rule id, reply line) for a request made of ``attrs``."""
    decision = decide(ruleset, **attrs)
    return decision.rule, decision.action.line


def rule_ids(ruleset: Ruleset) -> list[str]:
    """The ids of the rules (not groups) that can decide, in the order they are tried."""
    return [node.id for node in walk(ruleset.nodes) if isinstance(node, Rule)]


def tried_order(ruleset: Ruleset) -> list[str]:
    """Every id the engine can reach, in order: a group before and after its children."""
    return [*_tried(ruleset.nodes), DEFAULT_RULE]


def _tried(nodes: tuple[Node, ...]) -> Iterator[str]:
    for node in nodes:
        yield node.id
        if isinstance(node, Group):
            yield from _tried(node.children)
            yield node.id
