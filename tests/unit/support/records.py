"""Shared by the recording tests: requests, settings, and running the real reactor.

The recorder runs on the reactor that pytest-twisted runs each test in: a
test is a coroutine (`on_reactor`) that awaits the recorder's Deferreds
or `turn`, and the reactor pushes, spawns and reaps the writer meanwhile.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from postgate.config.record import RecordSettings
from postgate.record.recorder import Recorder
from postgate.wire.codec import Decoder, PolicyRequest, encode_request
from postgate.wire.policy_files import read_policy_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from twisted.internet.interfaces import IReactorProcess, IReactorTime

NOW = 1772366400.25  # 2026-03-01T12:00:00.25Z
REACTOR = cast("IReactorProcess", _reactor)
F = TypeVar("F", bound="Callable[..., Any]")


def on_reactor(test: F) -> F:
    """Run an ``async def`` test on the reactor, awaiting Deferreds."""
    return cast("F", pytest_twisted.ensureDeferred(test))


async def turn(seconds: float = 0.0) -> None:
    """Let the reactor run for ``seconds``: pushes, the writer's reports, reaping."""
    await deferLater(cast("IReactorTime", _reactor), seconds, lambda: None)


def request(n: int = 0, **extra: str) -> PolicyRequest:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "198.51.100.7",
        "client_port": str(n),
        "sender": "alice.smith@example.org",
        "recipient": f"bob{n}@example.com",
        "sasl_username": "",
    }
    attrs.update(extra)
    return PolicyRequest(attrs)


def received(n: int = 0, **extra: str) -> PolicyRequest:
    """`request` as the decoder hands it over, its received lines kept."""
    (decoded,) = Decoder().feed(encode_request(request(n, **extra).as_dict()))
    return decoded


def settings(path: Path, **changes: Any) -> RecordSettings:
    return RecordSettings(**{"path": path, "enabled": True, **changes})


def recorder(path: Path, **changes: Any) -> Recorder:
    return Recorder(settings(path, **changes), REACTOR)


def ports(path: Path) -> list[int]:
    return [int(case.request["client_port"]) for case in read_policy_file(path)]


async def started(made: Recorder) -> int:
    """The writer's pid once a push has started it (bounded wait)."""
    for _ in range(200):
        pid = made.writer_pid
        if pid is not None:
            return pid
        await turn(0.006)
    raise AssertionError("no writer started")


def moments() -> list[float]:
    """Times around every rounding edge, in an order that moves back and forth."""
    fractions = [0.0, 0.25, 0.5, 4e-7, 5e-7, 6e-7, 0.9999994, 0.9999995, 0.9999996, 1 - 2**-30]
    fractions += [j / 128 for j in range(1, 128, 2)]  # microseconds ending in exactly .5
    seconds = [0, 1, 59, 86399, 951782400, 1772366399, 1772366400, 4102444800, -1, -86401]
    rng = random.Random(5)
    values = [s + f for s in seconds for f in fractions]
    values += [math.nextafter(v, math.inf) for v in values] + [-0.0, 1e-300]
    values += [rng.uniform(-1e9, 5e9) for _ in range(2000)]
    rng.shuffle(values)
    return values
