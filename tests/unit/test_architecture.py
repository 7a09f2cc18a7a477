"""Which part of postgate may import which: no cycles, Twisted only at the edges.

Every module under src/postgate is parsed with `ast` (nothing is imported), and
each ``import`` is sorted by where it stands:

- runtime: at module level (class bodies included), outside ``if TYPE_CHECKING:``;
- lazy: inside a function. It runs on the first call, so it counts as runtime:
  a cycle that only a lazy import hides is still two modules that need each
  other, and the lazy imports here are for start-up time, not to hide cycles;
- type-only: under ``if TYPE_CHECKING:``; never run (annotations are strings
  under ``from __future__ import annotations``).

The cycle check follows runtime and lazy imports between postgate modules. The
table below follows all three kinds: a type-only import still couples the
parts. A package may always import its own modules; ``postgate`` itself (the
version) may be imported by anyone. ``from a import b`` counts as importing the
module ``a.b`` when there is one, else ``a``. Libraries: "stdlib" means nothing
outside the standard library; Twisted: whether the part may import Twisted.

This table is the one the test enforces (it is parsed from this docstring):

| part | may import (besides its own modules) | libraries | Twisted |
|---|---|---|---|
| wire | nothing | stdlib | no |
| replies | wire | any | no |
| config | nothing | any | no |
| config.problems | nothing | stdlib | no |
| config.values | config.problems, replies, wire | any | no |
| config.record | config.problems, config.values | any | no |
| config.dns | config.problems, config.values | any | no |
| config.load | config, rules, replies, wire | any | no |
| rules | replies, wire, config.problems, config.values, config.dns | any | no |
| answer | rules, replies, wire, config (type-only) | any | no |
| state | answer, rules, replies, wire, config | any | no |
| record | wire, replies, config | any | yes |
| daemon | everything but commands | any | yes |
| commands | everything | any | yes |
| __main__ | everything | any | no |

The recorder may use Twisted for ``reactor.spawnProcess``. A new top-level
module or package needs a row here and the same row in docs/architecture.md
before the tests pass.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable

SRC: Final = Path(__file__).resolve().parents[2] / "src" / "postgate"
DOC: Final = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
ROOT: Final = "postgate"


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted, without the leading "postgate."
    target: str  # dotted; postgate modules without the leading "postgate."
    line: int
    kind: str  # "runtime", "lazy" or "type-only"
    ours: bool  # the target is a postgate module


@dataclass(frozen=True, slots=True)
class Row:
    allowed: tuple[str, ...]
    type_only: tuple[str, ...]
    stdlib_only: bool
    twisted: bool


def parse_table(doc: str) -> dict[str, Row]:
    cells = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in doc.splitlines()
        if line.startswith("| ") and not line.startswith("| part")
    ]
    parts = [c[0] for c in cells if "." not in c[0] and not c[0].startswith("_")]
    rows = {}
    for part, allowed, libraries, twisted in cells:
        names = [n.strip() for n in allowed.split(",")]
        if allowed == "nothing":
            names = []
        elif allowed.startswith("everything"):
            excluded = allowed.removeprefix("everything").removeprefix(" but ").split(", ")
            names = [p for p in parts if p not in {part, *excluded}]
        rows[part] = Row(
            allowed=tuple(n.removesuffix(" (type-only)") for n in names),
            type_only=tuple(n.removesuffix(" (type-only)") for n in names if "(type-only)" in n),
            stdlib_only=libraries == "stdlib",
            twisted=twisted == "yes",
        )
    return rows


TABLE: Final = parse_table(__doc__ or "")


def doc_rows(text: str) -> list[tuple[str, ...]]:
    """(part, may import, libraries, Twisted) per row of the doc's Packages table."""
    section = text.split("\n## Packages\n", 1)[1].split("\n## ", 1)[0]
    cells = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    return [(c[0].strip("`"), *c[2:]) for c in cells]


def module_sources(src: Path = SRC) -> dict[str, tuple[str, bool]]:
    """Dotted name (no "postgate.") -> (source, is a package)."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if package else parts) or ROOT
        found[name] = (path.read_text(), package)
    return found


def imports_of(modules: dict[str, tuple[str, bool]]) -> list[Import]:
    found: list[Import] = []
    for name, (source, package) in modules.items():
        _Collector(name, package, set(modules), found).visit(ast.parse(source))
    return found


class _Collector(ast.NodeVisitor):
    def __init__(self, name: str, package: bool, modules: set[str], out: list[Import]) -> None:
        self.name, self.package, self.modules, self.out = name, package, modules, out
        self.kind = "runtime"

    def _within(self, kind: str, nodes: Iterable[ast.AST]) -> None:
        outer = self.kind
        if outer != "type-only":  # a lazy import under TYPE_CHECKING is still type-only
            self.kind = kind
        for node in nodes:
            self.visit(node)
        self.kind = outer

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            self._within("type-only", node.body)
            self._within(self.kind, node.orelse)
        else:
            self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._within("lazy", node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            here = self._dotted(self.name).split(".")
            here = here if self.package else here[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, base] if base else here)
        for alias in node.names:
            self._add(f"{base}.{alias.name}", node.lineno, fallback=base)

    def _add(self, full: str, line: int, fallback: str | None = None) -> None:
        if full != ROOT and not full.startswith(ROOT + "."):
            self.out.append(Import(self.name, fallback or full, line, self.kind, ours=False))
            return
        target = full.removeprefix(ROOT + ".") if full != ROOT else ROOT
        while target not in self.modules and "." in target:
            target = target.rpartition(".")[0]  # a name inside a module, or a package
        if target not in self.modules:  # no such module: name what the line names
            target = (fallback or full).removeprefix(ROOT + ".")
        self.out.append(Import(self.name, target, line, self.kind, ours=True))

    @staticmethod
    def _dotted(name: str) -> str:
        return ROOT if name == ROOT else f"{ROOT}.{name}"


def row_of(module: str, table: dict[str, Row]) -> str | None:
    """The table row that governs ``module``: its longest dotted prefix with a row."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in table:
            return ".".join(parts[:end])
    return None


def covers(entry: str, module: str) -> bool:
    return module == entry or module.startswith(entry + ".")


def forbidden(imports: list[Import], table: dict[str, Row]) -> list[str]:
    """One line per import the table does not allow, with file and line."""
    wrong = []
    for imp in imports:
        if imp.importer == ROOT:
            continue
        part = row_of(imp.importer, table)
        where = f"{imp.importer.replace('.', '/')}.py:{imp.line}"
        if part is None:
            wrong.append(f"{where}: {imp.importer} has no row in the table")
            continue
        row = table[part]
        top = imp.target.split(".")[0]
        if not imp.ours:
            if top == "twisted" and not row.twisted:
                wrong.append(f"{where}: {part} may not import Twisted ({imp.target})")
            elif row.stdlib_only and top not in sys.stdlib_module_names:
                wrong.append(f"{where}: {part} may use the stdlib only, not {imp.target}")
            continue
        if imp.target == ROOT or covers(part, imp.target):
            continue
        granted = [e for e in row.allowed if covers(e, imp.target)]
        if not granted:
            allowed = ", ".join(row.allowed) or "nothing"
            wrong.append(f"{where}: {part} may not import {imp.target}; it may import {allowed}")
        elif imp.kind != "type-only" and all(e in row.type_only for e in granted):
            wrong.append(f"{where}: {part} may import {imp.target} under TYPE_CHECKING only")
    return wrong


def cycles(imports: list[Import]) -> list[str]:
    """One line per strongly connected group of modules, showing one cycle through it."""
    graph: dict[str, dict[str, int]] = {}
    for imp in imports:
        if imp.ours and imp.kind != "type-only" and imp.target != imp.importer:
            graph.setdefault(imp.importer, {}).setdefault(imp.target, imp.line)
    found = []
    for group in _components(graph):
        path = _cycle_in(group, graph)
        hops = zip(path, [*path[1:], path[0]], strict=True)
        steps = " -> ".join(f"{a}:{graph[a][b]}" for a, b in hops)
        found.append(f"import cycle (module:line of its import): {steps} -> {path[0]}")
    return found


def _components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            group.append(node)
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _cycle_in(group: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in graph.get(node, {}):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return list(reversed(path))
            if nxt in members and nxt not in came:
                came[nxt] = node
                frontier.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


IMPORTS: Final = imports_of(module_sources())


class TestTheTree:
    def test_no_import_cycle(self) -> None:
        found = cycles(IMPORTS)
        assert not found, "\n".join(found)

    def test_every_import_follows_the_table(self) -> None:
        found = forbidden(IMPORTS, TABLE)
        assert not found, "\n".join(found)

    def test_the_architecture_doc_states_this_table(self) -> None:
        """docs/architecture.md grants, row by row, exactly what the table above grants."""
        mine = [
            tuple(c.strip() for c in line.strip().strip("|").split("|"))
            for line in (__doc__ or "").splitlines()
            if line.startswith("| ") and not line.startswith("| part")
        ]
        assert mine == doc_rows(DOC.read_text())

    def test_the_tree_was_read(self) -> None:
        """Guards the two tests above against passing on an empty or misread tree."""
        assert {"rules.engine", "wire.codec", "commands.cli"} <= {i.importer for i in IMPORTS}
        assert any(i.target == "twisted.internet.defer" for i in IMPORTS)
        assert any(i.kind == "type-only" and i.ours for i in IMPORTS)
        assert any(i.kind == "lazy" and i.ours for i in IMPORTS)


def synthetic(**sources: str) -> list[Import]:
    """Imports of made-up modules; a name ending in "__init__" is a package."""
    modules = {}
    for name, source in sources.items():
        package = name.endswith("____init__")
        modules[name.removesuffix("____init__").replace("__", ".")] = (source, package)
    return imports_of(modules)


class TestTheChecks:
    def test_a_cycle_through_a_lazy_import_is_found(self) -> None:
        found = cycles(
            synthetic(
                wire__a="from postgate.wire import b\n",
                wire__b="def f():\n    from postgate.wire.c import x\n",
                wire__c="import postgate.wire.a\n",
            )
        )
        assert [
            "import cycle (module:line of its import): wire.a:1 -> wire.b:2 -> wire.c:1 -> wire.a"
        ] == found

    def test_a_type_only_import_makes_no_cycle(self) -> None:
        found = cycles(
            synthetic(
                rules__a="from postgate.rules.b import B\n",
                rules__b="import typing\nif typing.TYPE_CHECKING:\n    from . import a\n",
            )
        )
        assert [] == found

    def test_relative_imports_resolve(self) -> None:
        imports = synthetic(
            rules__a="from .b import x\nfrom . import c\nfrom ..wire import codec\n",
            rules__b="",
            rules__c="",
            rules____init__="from .a import y\n",
            wire__codec="",
        )
        assert {
            ("rules.a", "rules.b"),
            ("rules.a", "rules.c"),
            ("rules.a", "wire.codec"),
            ("rules", "rules.a"),
        } == {(i.importer, i.target) for i in imports}

    def test_forbidden_imports_are_named_with_their_place(self) -> None:
        imports = synthetic(
            wire__codec="from postgate.rules import engine\n",
            rules__engine="from postgate.rules.model import Rule\nimport postgate.daemon.server\n",
            rules__model="",
            daemon__server="def f():\n    from postgate.commands.cli import main\n",
            commands__cli="",
        )
        assert [
            "wire/codec.py:1: wire may not import rules.engine; it may import nothing",
            (
                "rules/engine.py:2: rules may not import daemon.server"
                "; it may import replies, wire, config.problems, config.values, config.dns"
            ),
            (
                "daemon/server.py:2: daemon may not import commands.cli"
                "; it may import wire, replies, config, rules, answer, state, record"
            ),
        ] == forbidden(imports, TABLE)

    def test_type_only_grants_and_libraries(self) -> None:
        imports = synthetic(
            answer="from postgate.config.load import Config\n",
            rules__engine="from twisted.internet import defer\n",
            config__problems="import structlog\nimport difflib\n",
            state="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import twisted\n",
            record__pipe="import twisted.internet\nfrom postgate.rules import compile\n",
        )
        assert [
            "answer.py:1: answer may import config.load under TYPE_CHECKING only",
            "rules/engine.py:1: rules may not import Twisted (twisted.internet)",
            "config/problems.py:1: config.problems may use the stdlib only, not structlog",
            "state.py:3: state may not import Twisted (twisted)",
            ("record/pipe.py:2: record may not import rules; it may import wire, replies, config"),
        ] == forbidden(imports, TABLE)

    @pytest.mark.parametrize("module", ["newpart", "newpart.inner"])
    def test_a_part_without_a_row_fails(self, module: str) -> None:
        imports = [Import(module, "wire", 1, "runtime", ours=True)]
        assert [f"{module.replace('.', '/')}.py:1: {module} has no row in the table"] == forbidden(
            imports, TABLE
        )
