"""The thin Twisted layer: bytes in, decisions out, one reply per request.

`PolicyProtocol` frames with the sans-IO `Decoder`, asks the current
`Ruleset` (through `Answerer`) and writes the reply at once, so replies leave
in request order. It never closes an idle connection: Postfix pays a one
second retry for every connection it finds closed (policy-protocol.md §1).
Decisions live in `postgate.rules`; nothing here knows a rule.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol

from postgate.daemon.logs import DECISION_FIELDS
from postgate.replies.actions import DUNNO
from postgate.rules import ON_ERROR_RULE
from postgate.rules.networks import parse_address
from postgate.wire.codec import Decoder, ProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

    from postgate.config.load import Config
    from postgate.daemon.logs import DecisionWriter
    from postgate.record.recorder import Recorder
    from postgate.rules.networks import NetworkSet
    from postgate.wire.codec import PolicyRequest

log = structlog.get_logger("postgate")


class Answerer:
    """Turns a request into reply bytes under the current configuration.

    Holds the one reference a reload swaps; a request sees either the old or
    the new config, never a mixture.
    """

    def __init__(
        self,
        config: Config,
        logger: Any = None,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.time,
        decisions: DecisionWriter | None = None,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self._clock = clock
        self.answered = 0
        self.errors = 0
        # The daemon passes a logger bound once after logging is configured,
        # which skips structlog's lazy-proxy lookup on every request, and the
        # batched writer of `logs.decision_log` for the per-request event.
        self._log = log if logger is None else logger
        self._decision = decisions or self._log_decision

    def answer(self, request: PolicyRequest) -> bytes:
        start = time.perf_counter_ns()
        config = self.config
        try:
            decision = config.ruleset.program(request.raw)
            rule, action = decision.rule, decision.action
            # What is sent, templates filled in: the action's own text when fixed.
            wire = action.wire or action.encode_for(request, rule)
            line = action.sent or wire[7:-2].decode()
        except Exception:  # noqa: BLE001 - any rule bug must still get an answer
            self.errors += 1
            rule, action = ON_ERROR_RULE, config.daemon.on_error
            wire = action.encode_for(request, rule)
            line = wire[7:-2].decode()
            self._log.exception("evaluation_failed", **_fields(request.raw))
        recorder = self.recorder
        if recorder is not None and recorder.enabled:
            recorder.add(request, line, rule, self._clock(), action)
        dry_run = config.daemon.dry_run
        if dry_run:
            wire = DUNNO.wire
        self.answered += 1
        us = (time.perf_counter_ns() - start) // 1000
        self._decision(rule, line, dry_run, us, request.raw)
        return wire

    def _log_decision(
        self, rule: str, action: str, dry_run: bool, us: int, raw: Mapping[str, str]
    ) -> None:
        self._log.info("decision", rule=rule, action=action, dry_run=dry_run, us=us, **_fields(raw))


def _fields(raw: Mapping[str, str]) -> dict[str, str]:
    # Request values only ever appear as JSON values, never in the event
    # name (style.md §2.4).
    return {name: raw.get(name, "") for name in DECISION_FIELDS}


class PolicyProtocol(Protocol):
    """One Postfix connection: lock-step requests and replies."""

    def __init__(self, factory: PolicyFactory, peer: str) -> None:
        self._factory = factory
        self._decoder = Decoder(factory.answerer.config.daemon.limits)
        self._peer = peer
        self._timer: IDelayedCall | None = None
        self._closing = False
        self._send: Any = None

    def connectionMade(self) -> None:
        self._factory.connections.add(self)
        # Lock-step request/reply is the classic Nagle + delayed-ACK trap;
        # a reply is one small write, so send it at once.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._send = getattr(self.transport, "writeSomeData", None)

    def dataReceived(self, data: bytes) -> None:
        try:
            requests = self._decoder.feed(data)
        except ProtocolError as exc:
            log.warning("protocol_error", peer=self._peer, reason=str(exc))
            self._cancel_timer()
            self._close()
            return
        if requests:
            answer = self._factory.answerer.answer
            self._reply(b"".join([answer(request) for request in requests]))
        self._watch_partial()

    def _reply(self, data: bytes) -> None:
        """Send at once when the socket takes it all, else let Twisted buffer.

        Postfix reads each reply before it sends the next request, so our
        send buffer is empty whenever a request arrives and one non-blocking
        send nearly always suffices. Going through ``transport.write`` costs
        a second reactor pass and two epoll updates per request. After any
        short send we leave the rest, and every later reply, to Twisted so
        that ordering is never at risk.
        """
        transport: Any = self.transport
        if self._send is not None and transport.connected and not transport.disconnecting:
            sent = self._send(data)
            if sent == len(data):
                return
            self._send = None
            if isinstance(sent, int):
                data = data[sent:]
        transport.write(data)

    def _watch_partial(self) -> None:
        if not self._decoder.pending:
            self._cancel_timer()
            if self._closing:
                self._close()
        elif self._timer is None:
            timeout = self._factory.answerer.config.daemon.request_timeout
            self._timer = self._factory.reactor.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        log.warning("request_timeout", peer=self._peer, pending_bytes=self._decoder.pending)
        self._close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def close_when_idle(self) -> None:
        """Close after the request in progress, if any, has been answered."""
        self._closing = True
        if not self._decoder.pending:
            self._close()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: ARG002
        self._cancel_timer()
        self._factory.connections.discard(self)
        self._factory.connection_lost()


class PolicyFactory(Factory):
    """Accepts connections (subject to the allow list) for one `Answerer`."""

    def __init__(self, answerer: Answerer, reactor: IReactorTime) -> None:
        self.answerer = answerer
        self.reactor = reactor
        self.connections: set[PolicyProtocol] = set()
        self._drained: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress) -> PolicyProtocol | None:  # type: ignore[override]
        daemon = self.answerer.config.daemon
        peer = _describe(addr)
        if isinstance(addr, IPv4Address | IPv6Address) and not _allowed(addr.host, daemon.allow):
            log.warning("connection_refused", peer=peer, reason="not in daemon.allow")
            return None
        if len(self.connections) >= daemon.max_connections:
            log.warning("connection_refused", peer=peer, reason="daemon.max_connections reached")
            return None
        return PolicyProtocol(self, peer)

    def drain(self) -> Deferred[None]:
        """Close every connection once its current request is answered."""
        for protocol in list(self.connections):
            protocol.close_when_idle()
        if not self.connections:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drained.append(waiter)
        return waiter

    def connection_lost(self) -> None:
        if not self.connections:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                waiter.callback(None)


def _describe(addr: IAddress) -> str:
    if isinstance(addr, IPv4Address | IPv6Address):
        return f"{addr.host}:{addr.port}"
    name: Any = getattr(addr, "name", None)
    return str(name.decode() if isinstance(name, bytes) else name or "unix")


def _allowed(host: str, allow: NetworkSet) -> bool:
    # An IPv6 peer may carry a zone (fe80::1%eth0); IPv4-mapped peers are
    # matched as IPv4, like every network list (rules.networks).
    return parse_address(host.split("%", 1)[0]) in allow


__all__ = ["Answerer", "PolicyFactory", "PolicyProtocol"]
