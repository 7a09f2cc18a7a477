"""What the recorder tests share: a fixed clock, sample requests, settings, reading back."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from postgate.record.recorder import RecordSettings
from postgate.wire.codec import Decoder, PolicyRequest, encode_request
from postgate.wire.policy_files import read_policy_file

if TYPE_CHECKING:
    from pathlib import Path

NOW = 1772366400.25  # 2026-03-01T12:00:00.25Z


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


def settings(path: Path, **changes: object) -> RecordSettings:
    base = {"path": path, "enabled": True}
    base.update(changes)
    return RecordSettings(**base)  # type: ignore[arg-type]


def ports(path: Path) -> list[int]:
    return [int(case.request["client_port"]) for case in read_policy_file(path)]


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
