"""pytest plugin: every expectation in a ``test_*.policy`` file is a test item.

Registered through the ``pytest11`` entry point, so it is loaded by every
pytest run in an environment where postgate is installed. It therefore
imports nothing from postgate at module level: an admin's unrelated test
suite must not pay for, or break on, the rule engine. The verdict of each
item is `postgate.commands.replay.check`, the same function ``postgate replay`` and
``postgate test`` use, so the three never disagree.

Which configuration a file is tested against: a ``# config: PATH`` comment
at the top of the file (relative to the file), else the ``postgate_config``
ini option (relative to the ini file), else ``postgate.toml`` beside the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from postgate.commands.replay import Engine
    from postgate.wire.policy_files import Case

INI_NAME = "postgate_config"
_ENGINES = pytest.StashKey[dict[Path, "Engine"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI_NAME,
        "postgate configuration for test_*.policy files without a '# config:' line "
        "(relative to the ini file; default: postgate.toml beside each policy file)",
        default="",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> PolicyFile | None:
    if file_path.suffix == ".policy" and file_path.name.startswith("test_"):
        return PolicyFile.from_parent(parent, path=file_path)
    return None


class PolicyMismatchError(AssertionError):
    """An expectation did not hold; the message is the full readable report."""


class PolicyFile(pytest.File):
    """One request file; its blocks with an expectation become items."""

    def collect(self) -> Iterator[PolicyItem]:
        from postgate.commands import replay  # noqa: PLC0415 - see the module docstring

        try:
            engine = self._engine(replay)
            cases = replay.load_cases(self.path)
        except replay.LoadError as exc:
            raise self.CollectError(str(exc)) from None
        names: set[str] = set()
        for case in cases:
            if replay.has_expectation(case):
                name = _unique_name(case, names)
                yield PolicyItem.from_parent(self, name=name, case=case, engine=engine)

    def _engine(self, replay: Any) -> Engine:
        path = self._config_path(replay)
        if not path.exists():
            raise self.CollectError(
                f"{self.path}: no configuration {path}; name one with a '# config: PATH' "
                f"line at the top of the file or the {INI_NAME} ini option"
            )
        engines = self.config.stash.setdefault(_ENGINES, {})
        if path not in engines:
            engines[path] = replay.load_engine(path)
        fresh: Engine = replay.fresh_state(engines[path])  # each file's state starts empty
        return fresh

    def _config_path(self, replay: Any) -> Path:
        header: Path | None = replay.config_header(self.path)
        if header is not None:
            return header
        configured = str(self.config.getini(INI_NAME))
        if configured:
            base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
            return (base / configured).resolve()
        return self.path.parent / "postgate.toml"


def _unique_name(case: Case, taken: set[str]) -> str:
    default = f"line{case.line}"
    name = default if case.name in {"", f"{case.source}:{case.line}"} else case.name
    if name in taken:
        name = f"{name}@{default}"
    taken.add(name)
    return name


class PolicyItem(pytest.Item):
    """One request block and its expected answer or rule."""

    def __init__(self, *, case: Case, engine: Engine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.engine = engine

    def runtest(self) -> None:
        from postgate.commands import replay  # noqa: PLC0415 - see the module docstring

        outcome = replay.evaluate(self.engine, self.case, trace=True)
        if replay.check(outcome):
            raise PolicyMismatchError(replay.describe_failure(outcome))

    def repr_failure(
        self,
        excinfo: ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, PolicyMismatchError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"{self.path.name}:{self.case.line}: {self.name}"
