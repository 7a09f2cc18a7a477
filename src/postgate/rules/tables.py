"""Reading TOML tables of the rules section: unknown keys and did-you-mean.

Shared by the list loader and the rule compiler so every unknown key reads
the same way to the admin. Imports nothing from postgate but `problems`.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from postgate.config.problems import Problems


def suggest(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known word, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(
    table: Mapping[str, object],
    known: Iterable[str],
    place: str,
    problems: Problems,
    *,
    otherwise: Callable[[str], str] | None = None,
) -> None:
    """Report every key of ``table`` that is not in ``known``.

    ``otherwise(key)`` gives the reason for a key close to no known one: a
    rule table's stray key is more likely a misspelt attribute than a
    misspelt ``action``, and the admin should be pointed there.
    """
    names = tuple(known)
    for key in table:
        if key in names:
            continue
        hint = suggest(key, names)
        if otherwise is not None and not hint:
            reason = otherwise(key)
        else:
            reason = f"unknown key{hint}; known: {', '.join(names)}"
        problems.error(f"{place}.{key}", reason)
