"""The Redis check script finishes the check's own arithmetic: what a message needs."""

from __future__ import annotations

import itertools

import pytest

from postgate.rules.limits import COUNTS, LimitCheck, Window
from postgate.state.limit_scripts import need_rule
from postgate.wire.codec import PolicyRequest


def finished(mode: str, n: int, own: int) -> int:
    """What the Lua script does with ``own`` (state/limit_scripts.py, CHECK)."""
    return {"inc": own + 1, "max": max(own, n), "fixed": n}[mode]


@pytest.mark.parametrize("count", COUNTS)
def test_the_script_needs_what_the_check_needs(count: str) -> None:
    check = LimitCheck("R", ("sasl_username",), count, (Window(10, 3600, "10 per hour"),))
    stages = ("RCPT", "DATA", "END-OF-MESSAGE", "MAIL", "rcpt")
    for stage, own, size, recipients in itertools.product(
        stages, (0, 1, 3), ("", "0", "5000", "x"), ("", "0", "4")
    ):
        request = PolicyRequest(
            {"protocol_state": stage, "size": size, "recipient_count": recipients}
        )
        mode, n = need_rule(check, request)
        expected = check._need(request, stage.upper(), own)
        assert expected == finished(mode, n, own), (stage, own, size, recipients)
