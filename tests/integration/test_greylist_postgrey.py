"""postgate and postgrey side by side on one generated greylisting workload.

Both see the same requests in the same order on the same clock (postgrey
reads ``policy_test_time``; postgate's answer step is given the time, as
``replay`` does), with postgrey's defaults (300 s delay, 2 days, 35 days, 5
passes) and its default whitelist files, which postgate reads as lists.
Every answer must agree, except where postgate's documented differences
apply (docs/rules.md, Greylisting): pool awareness, and the auto-allowlist
counted per network rather than per address. Each difference is counted by
its reason; one without a reason fails the test.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from postgate.answer import Answer, Local, settle
from postgate.config.load import load_config
from postgate.rules.triplets import pool_of
from postgate.state import local_providers
from postgate.wire.codec import PolicyRequest
from tests.integration.support import postgrey
from tests.integration.support.greylist_workload import Attempt, workload
from tests.integration.support.needs import need

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.config.load import Config

CONFIG = """
[lists.postgrey_clients]
type = "postgrey_clients"
file = "/etc/postgrey/whitelist_clients"

[lists.postgrey_recipients]
type = "postgrey_recipients"
file = "/etc/postgrey/whitelist_recipients"

[[rules]]
id = "POSTGREY_CLIENTS"
client_name = { list = "postgrey_clients" }
action = "DUNNO"

[[rules]]
id = "POSTGREY_RECIPIENTS"
recipient = { list = "postgrey_recipients" }
action = "DUNNO"

[[rules]]
id = "GREYLIST"
greylist = { pool = true }
"""


def verdict(action: str) -> str:
    """defer or pass: postgrey's PREPEND X-Greylist and DUNNO both let the mail through."""
    return "defer" if action.startswith(("DEFER_IF_PERMIT", "450", "451")) else "pass"


def reason(attempt: Attempt, answer: Answer) -> str:
    """Why postgate may answer otherwise than postgrey here, from its own trace."""
    trace = " ".join(answer.trace)
    if pool_of(PolicyRequest(attempt.attrs)):
        return "pool awareness"
    if "allowlisted" in trace:
        return "auto-allowlist per network"
    return f"unexplained ({attempt.kind}: {trace})"


def compare(
    config: Config, server: postgrey.PrivatePostgrey, attempts: list[Attempt]
) -> dict[str, collections.Counter[str]]:
    facts = Local(local_providers(config))
    seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for attempt in attempts:
        theirs = verdict(server.ask(attempt.attrs, attempt.time))
        answer = settle(config, PolicyRequest(attempt.attrs), attempt.time, facts, trace=True)
        assert isinstance(answer, Answer)
        ours = verdict(answer.text)
        seen["same" if ours == theirs else f"{ours} here, {theirs} in postgrey"][
            attempt.kind if ours == theirs else reason(attempt, answer)
        ] += 1
    return seen


def side_by_side(tmp_path: Path, text: str) -> dict[str, collections.Counter[str]]:
    missing = postgrey.missing_reason()
    if missing is not None:
        need(missing)
    path = tmp_path / "side-by-side.toml"
    path.write_text(text)
    with postgrey.PrivatePostgrey(tmp_path) as server:
        return compare(load_config(path), server, workload())


def test_without_pool_awareness_every_answer_is_postgreys(tmp_path: Path) -> None:
    seen = side_by_side(tmp_path, CONFIG.replace("{ pool = true }", "true"))
    assert {"same"} == set(seen), {k: dict(v) for k, v in seen.items()}


def test_same_answers_as_postgrey_except_where_documented(tmp_path: Path) -> None:
    attempts = workload()
    seen = side_by_side(tmp_path, CONFIG)
    report = {k: dict(v) for k, v in seen.items()}
    print(report)
    assert sum(sum(c.values()) for c in seen.values()) == len(attempts)
    different = {k: v for k, v in seen.items() if k != "same"}
    unexplained = [
        r for counts in different.values() for r in counts if r.startswith("unexplained")
    ]
    assert not unexplained, report
    # Pool awareness only ever lets mail through sooner; nothing is deferred that postgrey passes.
    assert set(different) <= {"pass here, defer in postgrey"}, report
    assert different["pass here, defer in postgrey"]["pool awareness"] > 0, report
    assert sum(seen["same"].values()) > 0.9 * len(attempts), report
