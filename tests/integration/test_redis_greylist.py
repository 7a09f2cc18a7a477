"""Greylisting in a real private Redis: the server's step is the embedded store's, and shared.

The `RECORD` script and `GreylistStore.record` judge the same random
sightings (new, early, restarted, passed, known, allowlisted, expired) the
same way and keep the same records. Two daemons on one Redis share the
triplets: a first attempt deferred by one is let through by the other once
the delay has passed.
"""

from __future__ import annotations

import random
import re
import socket
import time
from typing import TYPE_CHECKING, Final

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from postgate.config.redis import RedisSettings
from postgate.daemon.redis import Redis
from postgate.rules.greylisting import Seen, Settings
from postgate.state.greylist import GreylistStore
from postgate.state.greylist_scripts import SCRIPTS, record_args, seen_of
from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.support.redis import PrivateRedis

DELAY: Final = 2
REQUEST: Final = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "client_address": "192.0.2.7",
    "client_name": "unknown",
    "sender": "alice@example.org",
    "recipient": "bob@example.com",
}


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_the_script_judges_and_keeps_what_the_embedded_store_does(
    redis: PrivateRedis,
) -> None:
    client = Redis(RedisSettings(port=redis.port, prefix="t:"), SCRIPTS)
    client.start()
    rng = random.Random(11)
    settings = Settings(delay=300, retry_window=3000, lifetime=20000, allowlist_after=3)
    store = GreylistStore()
    # Keys expire on Redis's own clock: the sightings are made from now on.
    now = time.time()
    triplets = [f"192.0.2.0/24 s{i}@example.org r@example.com" for i in range(4)]
    whys: list[tuple[str, str]] = []
    try:
        while not client.connected:
            await deferLater(reactor, 0.02)
        for _ in range(300):
            now += rng.choice((1.0, 100.0, 299.0, 400.0, 2000.0, 3700.0, 25000.0))
            triplet = rng.choice(triplets)
            keys = [f"t:grey:t:{triplet}", f"t:grey:c:{triplet.partition(' ')[0]}"]
            expected = store.record(triplet, triplet.partition(" ")[0], now, settings)
            whys.append(
                (expected.why, await client.run("grey_record", keys, record_args(settings, now)))
            )
            held = seen_of(await client.run("grey_seen", keys, []))
            stored = store.seen(triplet, triplet.partition(" ")[0])
            assert _rounded(stored) == _rounded(held), (expected.why, stored, held)
    finally:
        await client.stop()
    assert [e for e, _ in whys] == [w for _, w in whys]
    assert {"new", "early", "passed", "known", "allowlisted"} <= {w for w, _ in whys}


def _rounded(seen: Seen) -> tuple[object, object]:
    """The records, their times to the millisecond (Redis keeps six decimals)."""
    entry = None if seen.entry is None else tuple(round(t, 3) for t in seen.entry)
    client = None if seen.client is None else (seen.client.passes, round(seen.client.last, 3))
    return entry, client


def config(path: Path, port: int) -> Path:
    path.mkdir(exist_ok=True)
    file = path / "postgate.toml"
    file.write_text(
        f"""
[state]
backend = "redis"
directory = "state"

[state.redis]
port = {port}

[[rules]]
id = "GREYLIST"
greylist = {{ delay = {DELAY} }}
action = "DEFER_IF_PERMIT 4.7.1 Greylisted, try again in {{retry}} seconds"
"""
    )
    return file


def test_two_daemons_on_one_redis_share_the_triplets(tmp_path: Path, redis: PrivateRedis) -> None:
    ports = [free_port(), free_port()]
    a, b = (
        Daemon(config(tmp_path / name, redis.port), (f"tcp:{port}:interface=127.0.0.1",))
        for name, port in zip(("a", "b"), ports, strict=True)
    )
    with a, b:
        with connect(("127.0.0.1", ports[0]), socket.AF_INET) as sock:
            first = ask(sock, REQUEST)
        with connect(("127.0.0.1", ports[1]), socket.AF_INET) as sock:
            early = ask(sock, REQUEST)
            time.sleep(DELAY + 0.5)
            late = ask(sock, REQUEST)
            other = ask(sock, REQUEST | {"recipient": "carol@example.com"})
    deferral = rb"action=DEFER_IF_PERMIT 4\.7\.1 Greylisted, try again in \d+ seconds\n\n"
    assert re.fullmatch(deferral, first), first
    assert re.fullmatch(deferral, early), early  # B knows A's first sight: still too early
    assert b"action=DUNNO\n\n" == late
    assert re.fullmatch(deferral, other), other  # another triplet is new everywhere
