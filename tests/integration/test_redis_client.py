"""The Redis adapter against a real private redis-server: scripts, outages, recovery.

In process, on the real reactor: a stopped server fails each call at once and
is logged once; a paused one (SIGSTOP) fails each call within
``reply_timeout``; both recover without a restart of anything but Redis, and
a Redis that forgot the scripts (restart, SCRIPT FLUSH) gets them again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import pytest
import pytest_twisted
from structlog.testing import capture_logs
from twisted.internet import reactor
from twisted.internet.task import deferLater

from postgate.config.redis import RedisSettings
from postgate.daemon.redis import Redis, RedisDownError
from tests.integration.support.redis import PrivateRedis

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SCRIPTS: Final = {"add": "return redis.call('INCRBY', KEYS[1], ARGV[1])"}
BOUND: Final = 15.0  # seconds any wait below may take at most
SECRET: Final = "test-only-secret"  # noqa: S105 - requirepass of the private server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    instance = PrivateRedis(tmp_path, password=SECRET)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def client(server: PrivateRedis, reply_timeout: float = 0.3) -> Redis:
    settings = RedisSettings(port=server.port, password=SECRET, reply_timeout=reply_timeout)
    redis = Redis(settings, SCRIPTS)
    redis.start()
    return redis


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds)


async def until_answering(redis: Redis) -> float:
    """Seconds until a call succeeds again; fails the test past `BOUND`."""
    started = time.monotonic()
    while time.monotonic() - started < BOUND:
        try:
            await redis.run("add", ["postgate:test:probe"], [1])
        except Exception:
            await pause(0.05)
            continue
        return time.monotonic() - started
    raise AssertionError("Redis did not answer again")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_scripts_run_and_are_sent_again_after_a_flush(server: PrivateRedis) -> None:
    redis = client(server)
    try:
        await until_answering(redis)
        assert 5 == await redis.run("add", ["postgate:test:k"], [5])
        assert "OK" == server.command("SCRIPT", "FLUSH")
        assert 7 == await redis.run("add", ["postgate:test:k"], [2])
    finally:
        await redis.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_stopped_redis_fails_at_once_is_logged_once_and_comes_back(
    server: PrivateRedis,
) -> None:
    redis = client(server)
    try:
        await until_answering(redis)
        with capture_logs() as logs:
            server.stop()
            started = time.monotonic()
            while redis.connected and time.monotonic() - started < BOUND:
                await pause(0.02)
            slowest = 0.0
            for _ in range(200):
                asked = time.monotonic()
                with pytest.raises(RedisDownError):
                    await redis.run("add", ["postgate:test:k"], [1])
                slowest = max(slowest, time.monotonic() - asked)
            server.start()
            back = await until_answering(redis)
        events = [e["event"] for e in logs]
        assert ["redis_unavailable", "redis_recovered"] == events
        assert slowest < 0.05
        assert back < 5.0
    finally:
        await redis.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_paused_redis_fails_within_the_reply_timeout_and_comes_back(
    server: PrivateRedis,
) -> None:
    redis = client(server, reply_timeout=0.3)
    try:
        await until_answering(redis)
        with capture_logs() as logs:
            server.pause()
            asked = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - txredisapi's timeout error
                await redis.run("add", ["postgate:test:k"], [1])
            waited = time.monotonic() - asked
            server.resume()
            await until_answering(redis)
        assert 0.25 < waited < 1.0
        assert ["redis_unavailable", "redis_recovered"] == [e["event"] for e in logs]
    finally:
        await redis.stop()
