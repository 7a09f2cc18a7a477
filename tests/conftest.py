"""Shared test setup: a clean structlog configuration for every test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import structlog

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Undo any `logs.configure` a test ran, so `capture_logs` sees every event."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
