"""Reading TOML tables of the rules section: unknown keys and did-you-mean.

Shared by the list loader and the rule compiler so every unknown key reads
the same way to the admin. Imports nothing from postgate but `problems`.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from postgate.problems import Problems


def suggest(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known word, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(
    table: Mapping[str, object], known: Iterable[str], place: str, problems: Problems
) -> None:
    """Report every key of ``table`` that is not in ``known``."""
    names = tuple(known)
    for key in table:
        if key not in names:
            reason = f"unknown key{suggest(key, names)}; known: {', '.join(names)}"
            problems.error(f"{place}.{key}", reason)
