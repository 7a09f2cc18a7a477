"""What an integration test does when the machine lacks something it needs."""

from __future__ import annotations

import os

import pytest


def need(reason: str) -> None:
    """Fail under CI=true (a missing dependency must not pass as a skip), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
