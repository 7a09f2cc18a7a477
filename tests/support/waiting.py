"""The one bounded poll: tests wait for a condition, never sleep blindly."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT: Final = 30.0  # upper bound for any wait on Postfix or a daemon
POLL: Final = 0.02


def wait_until(
    ready: Callable[[], bool], what: str | Callable[[], str], timeout: float = WAIT
) -> None:
    """Poll ``ready`` until it holds; fail with ``what`` after ``timeout`` seconds.

    ``ready`` may raise to stop early (the process waited on has exited);
    ``what`` may be a function, so the failure shows the state at that moment
    (a log, say) rather than at the start.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            told = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {told}")
        time.sleep(POLL)
