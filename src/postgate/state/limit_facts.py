"""The ``limit`` fact provider: the embedded store, read and changed for the answer step.

Facts are named ``limit:RULE:KEY`` (`postgate.rules.limits`). `peek` always
answers from memory, so a limit never makes an answer wait; it also notices
a new transaction of a session (the previous message ended uncharged) and
sweeps what expired. Effects reserve, charge, and mark breaches, which are
logged once per key per breach (``limit_exceeded``) and once when the key is
under again (``limit_recovered``), never once per refused request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from postgate.rules.limits import Breach, Charge, Reserve
from postgate.state.limits import LimitStore, View

if TYPE_CHECKING:
    from collections.abc import Callable

    from postgate.rules.model import Effect
    from postgate.state.disk import DiskStore
    from postgate.wire.codec import PolicyRequest

    Log = Callable[..., None]

# Messages ended without END-OF-MESSAGE, none ever seen: the hook is missing.
UNFINISHED_BEFORE_WARNING: Final = 3
MAX_BREACHED: Final = 100_000  # keys remembered as over; the oldest go first
END_OF_DATA_LINE: Final = (
    "smtpd_end_of_data_restrictions = check_policy_service <the same service "
    "as in smtpd_recipient_restrictions>"
)


def _no_log(event: str, **fields: object) -> None:
    """Replay and tests: no log."""


def session_of(request: PolicyRequest) -> str:
    """One SMTP session: the smtpd process (``instance`` starts with its pid) and the client."""
    pid = request.get("instance").partition(".")[0]
    return f"{pid}|{request.get('client_address')}|{request.get('client_port')}"


class LimitFacts:
    """`answer.FactProvider` for ``limit:`` facts, over one long-lived `LimitStore`."""

    def __init__(self, store: LimitStore | None = None, log: Log = _no_log) -> None:
        self.store = store if store is not None else LimitStore()
        self._log = log
        self.breached: dict[tuple[str, str], None] = {}
        self.exceeded: dict[str, int] = {}  # requests refused, by rule: for /metrics
        self._told = False
        self._empty = LimitStore()

    def attach(self, disk: DiskStore, now: float) -> int:
        """Persist to ``disk`` from now on, after loading what it holds; returns rows loaded."""
        self.store.disk = disk
        return self.store.load(now)

    def peek(self, name: str, request: PolicyRequest, now: float) -> object:
        _, rule, key = name.split(":", 2)
        instance = request.get("instance")
        store = self.store
        if instance:
            store.session_seen(session_of(request), instance)
        store.sweep(now)
        if not self._told and not store.ends_seen and store.unfinished >= UNFINISHED_BEFORE_WARNING:
            self._told = True
            self._log("limit_needs_end_of_message", rule=rule, add_to_main_cf=END_OF_DATA_LINE)
        return store.view(rule, key, instance)

    async def fetch(self, name: str, request: PolicyRequest, now: float) -> object:
        return self.peek(name, request, now)

    def unavailable(self, name: str) -> object:
        _, rule, key = name.split(":", 2)
        return View(self._empty, rule, key, 0, 0, {})

    def apply(self, effect: Effect, request: PolicyRequest, now: float) -> None:
        value = effect.value
        instance = request.get("instance")
        if isinstance(value, Reserve):
            if instance:
                self.store.reserve(
                    value.rule, value.key, instance, session_of(request), value.amount, now
                )
            self._recovered(value.rule, value.key)
        elif isinstance(value, Charge):
            self.store.charge(value.rule, value.windows, value.charges, instance, now)
            for key, _ in value.charges:
                self._recovered(value.rule, key)
        elif isinstance(value, Breach):
            self._exceeded(value)

    def _exceeded(self, breach: Breach) -> None:
        self.exceeded[breach.rule] = self.exceeded.get(breach.rule, 0) + 1
        held = (breach.rule, breach.key)
        if held in self.breached:
            return
        if len(self.breached) >= MAX_BREACHED:
            del self.breached[next(iter(self.breached))]
        self.breached[held] = None
        self._log(
            "limit_exceeded",
            rule=breach.rule,
            key=breach.key,
            window=breach.window,
            limit=breach.limit,
            retry_seconds=round(breach.retry, 1) if breach.retry != float("inf") else None,
        )

    def _recovered(self, rule: str, key: str) -> None:
        if self.breached.pop((rule, key), False) is None:
            self._log("limit_recovered", rule=rule, key=key)


__all__ = ["END_OF_DATA_LINE", "LimitFacts", "session_of"]
