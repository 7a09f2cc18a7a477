"""What the daemon counts while it answers: plain integers, read by status and metrics.

The hot path (`postgate.daemon.server.Answerer`) adds to dicts and a list
here, a few dictionary operations per request; `postgate status` and the
Prometheus collector (`postgate.daemon.metrics`) turn them into reports when
asked. Counts are kept per rule id; the rule's action class (2xx, 4xx, 5xx,
DUNNO, OK, other) is the configuration's, so a reload first settles the
counts under the classes they were decided with.

Every key is a rule id or a fixed word, never a request value: the number of
series stays what the configurations make it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Final

from postgate.replies.model import REPLY_CLASS, Verb
from postgate.rules.attributes import STATES
from postgate.rules.model import DEFAULT_RULE, ON_ERROR_RULE
from postgate.rules.program import walk

if TYPE_CHECKING:
    from postgate.config.load import Config
    from postgate.replies.model import Action

# Decision latency bucket bounds, in microseconds (the answer step alone).
BOUNDS_US: Final = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 250_000, 1_000_000)
OTHER_STATE: Final = "other"
# Why a connection was refused: not in [daemon] allow, not allowed by its
# credentials, or over daemon.max_connections.
REFUSALS: Final = ("network", "credentials", "max_connections")


def action_class(action: Action) -> str:
    """2xx/4xx/5xx for a reply, DUNNO, OK, or "other" (HOLD, PREPEND, FILTER, ...)."""
    if action.code is not None:
        return f"{action.code // 100}xx"
    if action.verb in REPLY_CLASS:
        return f"{REPLY_CLASS[action.verb]}xx"
    if action.verb is Verb.DUNNO or action.verb is Verb.OK:
        return str(action.verb.value)
    return "other"


def classes(config: Config) -> dict[str, str]:
    """Each rule id's action class under ``config``: rules, group defaults, the two fallbacks."""
    found = {DEFAULT_RULE: action_class(config.ruleset.default)}
    found[ON_ERROR_RULE] = action_class(config.daemon.on_error)
    for node in walk(config.ruleset.nodes):
        action = getattr(node, "action", None) or getattr(node, "default", None)
        if action is not None:
            found[node.id] = action_class(action)
    return found


class Stats:
    """Counters since start; the attributes are the hot path's, the methods the readers'."""

    __slots__ = (
        "buckets",
        "classes",
        "decisions",
        "latency_us",
        "observed",
        "protocol_errors",
        "refused",
        "reloads",
        "requests",
        "settled",
        "settled_observed",
    )

    def __init__(self, config: Config) -> None:
        self.requests = dict.fromkeys((*STATES, OTHER_STATE), 0)
        self.decisions: dict[str, int] = {}  # rule id -> answers since the last reload
        self.observed: dict[str, int] = {}  # rule id -> observe-mode hits since then
        self.settled: dict[tuple[str, str], int] = {}  # (rule, class) from earlier configs
        self.settled_observed: dict[tuple[str, str], int] = {}
        self.classes = classes(config)
        self.decisions.update(dict.fromkeys(self.classes, 0))  # the hot path only adds
        self.buckets = [0] * (len(BOUNDS_US) + 1)  # the last one: over every bound
        self.latency_us = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.protocol_errors = 0
        self.reloads = {"ok": 0, "failed": 0}

    def count(self, rule: str, state: str, us: int) -> None:
        """One answer, for the rare paths; `Answerer._done` inlines the same steps."""
        self.decisions[rule] = self.decisions.get(rule, 0) + 1
        self.requests[state if state in self.requests else OTHER_STATE] += 1
        self.buckets[bisect_left(BOUNDS_US, us)] += 1
        self.latency_us += us

    def reconfigure(self, config: Config) -> None:
        """Settle the counts under the classes they were made with, then take the new ones."""
        _settle(self.decisions, self.classes, self.settled)
        _settle(self.observed, self.classes, self.settled_observed)
        self.classes = classes(config)
        self.decisions.update(dict.fromkeys(self.classes, 0))

    def by_class(self, *, observed: bool = False) -> dict[tuple[str, str], int]:
        """(rule id, action class) -> count since start."""
        total = dict(self.settled_observed if observed else self.settled)
        current = self.observed if observed else self.decisions
        for rule, count in current.items():
            key = (rule, self.classes.get(rule, "other"))
            total[key] = total.get(key, 0) + count
        return total

    def answered(self) -> int:
        return sum(self.buckets)


def _settle(
    counts: dict[str, int], known: dict[str, str], into: dict[tuple[str, str], int]
) -> None:
    for rule, count in counts.items():
        key = (rule, known.get(rule, "other"))
        into[key] = into.get(key, 0) + count
    counts.clear()  # the same dict: the hot path holds no other reference


__all__ = ["BOUNDS_US", "REFUSALS", "Stats", "action_class", "classes"]
