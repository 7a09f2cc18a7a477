"""Limits in a real private Redis: shared exactly by two daemons, and Redis failing under traffic.

The windows the Lua scripts keep are the embedded store's
(`postgate.state.windows`): charged at random times, the counts Redis
reports equal the ones computed in Python. Two daemons on one Redis accept
exactly the limit between them while four clients send at once. Redis
stopped, paused (SIGSTOP) and restarted during traffic: every answer still
comes within the deadline (limits fail open), the outage is logged once,
and counting resumes without a restart of postgate.
"""

from __future__ import annotations

import io
import json
import random
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from postgate.commands.state import main as postgate_state
from postgate.config.redis import RedisSettings
from postgate.daemon.redis import Redis
from postgate.state import windows
from postgate.state.limit_scripts import SCRIPTS, view_of
from tests.integration.support.daemon import Daemon, ask, connect
from tests.integration.support.net import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.support.redis import PrivateRedis

DUNNO: Final = b"action=DUNNO\n\n"
DEADLINE: Final = 0.5


def config(path: Path, port: int, limit: int) -> Path:
    path.mkdir(exist_ok=True)
    file = path / "postgate.toml"
    file.write_text(
        f"""
[daemon]
deadline = {DEADLINE}

[state]
backend = "redis"
directory = "state"

[state.redis]
port = {port}
reply_timeout = 0.2
connect_timeout = 0.2

[[rules]]
id = "USER_RATE"
sasl_username = {{ present = true }}
limit = {{ key = ["sasl_username"], windows = ["{limit} per hour"] }}
"""
    )
    return file


def message(sock: socket.socket, user: str, instance: str) -> bytes:
    """RCPT and, when it passes, END-OF-MESSAGE of one message, as Postfix sends them."""
    base = {
        "request": "smtpd_access_policy",
        "sasl_username": user,
        "client_address": "192.0.2.7",
        "client_port": instance.rsplit(".", 1)[0][-5:],
        "instance": instance,
    }
    answer = ask(sock, base | {"protocol_state": "RCPT", "recipient": "r@example.com"})
    if answer == DUNNO:
        ask(sock, base | {"protocol_state": "END-OF-MESSAGE", "recipient_count": "1"})
    return answer


def test_two_daemons_on_one_redis_accept_exactly_the_limit(
    tmp_path: Path, redis: PrivateRedis
) -> None:
    limit, per_client = 25, 20
    ports = [free_port(), free_port()]
    daemons = [
        Daemon(config(tmp_path / name, redis.port, limit), (f"tcp:{port}:interface=127.0.0.1",))
        for name, port in zip(("a", "b"), ports, strict=True)
    ]
    accepted: list[int] = []
    lock = threading.Lock()

    def client(port: int, number: int) -> None:
        with connect(("127.0.0.1", port), socket.AF_INET) as sock:
            answers = [
                message(sock, "alice", f"{number:05x}.6b0b7c2f.1bba5.{n}")
                for n in range(per_client)
            ]
        with lock:
            accepted.append(sum(a == DUNNO for a in answers))

    with daemons[0], daemons[1]:
        threads = [
            threading.Thread(target=client, args=(ports[i % 2], i), daemon=True) for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    assert 4 == len(accepted)
    assert limit == sum(accepted), accepted


def test_redis_stopped_paused_and_restarted_under_traffic(
    tmp_path: Path, redis: PrivateRedis
) -> None:
    port = free_port()
    daemon = Daemon(config(tmp_path, redis.port, 3), (f"tcp:{port}:interface=127.0.0.1",))
    slowest: list[float] = []

    def timed(sock: socket.socket, user: str, instance: str) -> bytes:
        started = time.monotonic()
        answer = message(sock, user, instance)
        slowest.append(time.monotonic() - started)
        return answer

    with daemon, connect(("127.0.0.1", port), socket.AF_INET) as sock:
        counted = [timed(sock, "bob", f"a.1.1.{n}") for n in range(4)]
        redis.stop()
        while_down = [timed(sock, "carol", f"b.1.1.{n}") for n in range(30)]
        redis.start()
        _until_counting(sock, "dave")
        redis.pause()
        while_paused = [timed(sock, "erin", f"c.1.1.{n}") for n in range(5)]
        redis.resume()
        _until_counting(sock, "frank")
        after = [timed(sock, "grace", f"d.1.1.{n}") for n in range(4)]
        log = daemon.log()
    assert [DUNNO] * 3 == counted[:3]
    assert counted[3].startswith(b"action=450 4.7.1"), counted[3]
    assert [DUNNO] * 30 == while_down  # fails open
    assert [DUNNO] * 5 == while_paused
    assert [DUNNO] * 3 == after[:3]
    assert after[3].startswith(b"action=450 4.7.1"), after[3]
    # Two requests per message, each within the deadline (and a margin for the machine).
    assert max(slowest) < 2 * (DEADLINE + 0.25), max(slowest)
    assert "Traceback" not in log
    assert 2 >= log.count('"event":"redis_unavailable"') >= 1
    assert log.count('"event":"redis_recovered"') >= 1


def test_postgate_state_lists_and_resets_the_counters_in_redis(
    tmp_path: Path, redis: PrivateRedis
) -> None:
    port = free_port()
    file = config(tmp_path, redis.port, 3)
    with (
        Daemon(file, (f"tcp:{port}:interface=127.0.0.1",)),
        connect(("127.0.0.1", port), socket.AF_INET) as sock,
    ):
        for user, sent in (("alice", 2), ("bob", 1)):
            for n in range(sent):
                assert DUNNO == message(sock, user, f"{user}.1.1.{n}")
    listed = state(file, "list", "--json")
    counts = {e["key"]: e["counts"] for e in listed["entries"]}
    assert {"alice": {"3600": 2}, "bob": {"3600": 1}} == counts
    assert {"reset": 1} == state(file, "reset", "--key", "alice", "--json")
    assert ["bob"] == [e["key"] for e in state(file, "list", "--json")["entries"]]


def state(file: Path, *args: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    status = postgate_state([*args, "-c", str(file)], out, err)
    assert 0 == status, err.getvalue()
    found: dict[str, Any] = json.loads(out.getvalue())
    return found


def _until_counting(sock: socket.socket, user: str) -> None:
    """Send messages of ``user`` until Redis counts again (the limit of 3 trips)."""
    stop = time.monotonic() + 15
    n = 0
    while time.monotonic() < stop:
        n += 1
        if message(sock, user, f"e.1.1.{n}") != DUNNO:
            return
        time.sleep(0.05)
    raise AssertionError("the limit never counted again after Redis came back")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_the_scripts_keep_the_windows_of_the_embedded_store(redis: PrivateRedis) -> None:
    client = Redis(RedisSettings(port=redis.port), SCRIPTS)
    client.start()
    rng = random.Random(7)
    # Keys expire on Redis's own clock: the charges are made from now on.
    spans, now, ring = (60,), time.time(), windows.new_ring()
    keys = ["t:res", "t:flight", "t:limit:R:60:k"]
    try:
        for _ in range(200):
            now += rng.choice((0.5, 3.0, 7.0, 20.0, 70.0))
            weight = rng.randint(1, 5)
            args: list[object] = ["t:", repr(now), "m", "R", 1, 60, "k", weight]
            while not client.connected:
                await _tick()
            await client.run("limit_charge", [], args)
            windows.add(ring, 60, now, weight)
            check = [repr(now), "m", "900", "fixed", 1, "0", "R|k", "R", 60, 10]
            view = view_of(await client.run("limit_check", keys, check), spans)
            assert windows.count(ring, 60, now) == view.counted(60, now)
            assert windows.retry(ring, 60, now, 3) == view.retry(60, now, 3)
    finally:
        await client.stop()


async def _tick() -> None:
    await deferLater(reactor, 0.02)
