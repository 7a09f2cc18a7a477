"""Shared fixtures for the integration tests: a private Postfix, a private Redis, real daemons.

A missing Postfix (or not running as root) fails the run when CI=true and
skips the Postfix tests otherwise (common.md: no skipped test under CI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.integration.support.needs import need
from tests.integration.support.postfix import LogWindow, PrivatePostfix, log_checked, missing_reason
from tests.integration.support.postgates import EXAMPLES, Postgates, list_entries
from tests.integration.support.redis import PrivateRedis

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Domains every test may deliver to, whatever the reference lists hold.
TEST_DOMAINS = ("example.com",)


@pytest.fixture(scope="session")
def postfix() -> Iterator[PrivatePostfix]:
    """One private Postfix for the whole session, stopped with no process left behind."""
    reason = missing_reason()
    if reason is not None:
        need(reason)
    local = [*TEST_DOMAINS, *list_entries(EXAMPLES / "lists" / "local-domains.txt")]
    instance = PrivatePostfix(local)
    try:
        instance.start()
        yield instance
    finally:
        leftovers = instance.stop()
        instance.remove()
    assert leftovers == [], "Postfix processes survived `postfix stop` and were killed"


@pytest.fixture
def mail_log(postfix: PrivatePostfix) -> Iterator[LogWindow]:
    """After the test, the Postfix log of its window holds no unexpected warning."""
    with log_checked(postfix) as window:
        yield window


@pytest.fixture(autouse=True)
def _postfix_log_is_clean(request: pytest.FixtureRequest) -> None:
    """Every test that uses Postfix gets its log window checked, asked for or not."""
    if "postfix" in request.fixturenames:
        request.getfixturevalue("mail_log")


@pytest.fixture(scope="module")
def postgates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgates]:
    """Real postgate daemons for one test module, all stopped at its end."""
    starter = Postgates(tmp_path_factory.mktemp("postgate"))
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server on loopback for one test (a missing one fails under CI=true)."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
