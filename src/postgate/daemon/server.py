"""The thin Twisted layer: bytes in, decisions out, one reply per request.

`PolicyProtocol` frames with the sans-IO `Decoder` and hands each request to
the answer step (`postgate.answer`, through `Answerer`). A reply that is
decided at once is written at once; one whose facts are still being gathered
holds the replies behind it back, so replies always leave in request order.
It never closes an idle connection once it has asked (Postfix pays a one
second retry for every connection it finds closed, docs/protocol.md); one
that has sent nothing for ``first_request_timeout`` is not Postfix and is
closed. Nothing here knows a rule.
"""

from __future__ import annotations

import socket
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from postgate.answer import Answer, AnswerStep, failed
from postgate.daemon.access import credentials_refused, describe, network_allowed
from postgate.daemon.logs import DECISION_FIELDS
from postgate.daemon.redact import redactor
from postgate.daemon.stats import BOUNDS_US, OTHER_STATE, Stats
from postgate.replies.model import DUNNO
from postgate.wire.codec import Decoder, ProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime

    from postgate.answer import FactSource
    from postgate.config.load import Config
    from postgate.daemon.logs import DecisionWriter
    from postgate.record.recorder import Recorder
    from postgate.wire.codec import PolicyRequest

log = structlog.get_logger("postgate")


class Answerer:
    """The daemon's side of answering: the answer step, then the log, the count, the recording.

    Deciding is `postgate.answer`'s; what is left here is what only the
    daemon does with an answer once it has one.
    """

    def __init__(
        self,
        config: Config,
        logger: Any = None,
        recorder: Recorder | None = None,
        decisions: DecisionWriter | None = None,
        facts: FactSource | None = None,
        *,
        counting: bool = True,
    ) -> None:
        self.step = AnswerStep(config, facts, time.monotonic)
        self.stats = Stats(config)
        # Per-request counts only when something can read them (a control
        # socket or a metrics listener, both bound at start): about 0.4 µs a
        # request otherwise spent for no reader (docs/performance.md).
        self.counting = counting
        self._redact = redactor(config.log)
        self.recorder = recorder
        self.answered = 0
        self.errors = 0
        # The daemon passes a logger bound once after logging is configured,
        # which skips structlog's lazy-proxy lookup on every request, and the
        # batched writer of `logs.decision_log` for the per-request event.
        self._log = log if logger is None else logger
        self._decision = decisions or self._log_decision

    @property
    def config(self) -> Config:
        return self.step.config

    @config.setter
    def config(self, config: Config) -> None:
        self.stats.reconfigure(config)
        if config.log != self.step.config.log:
            self._redact = redactor(config.log)
        self.step.config = config

    def answer(self, request: PolicyRequest) -> bytes | Deferred[bytes]:
        """The reply's bytes, or a Deferred of them when facts must be gathered first."""
        start = time.perf_counter_ns()
        answer = self.step.respond(request, time.time())
        if isinstance(answer, Answer):
            try:
                return self._done(answer, request, start)
            except Exception:  # noqa: BLE001 - the log or the recorder broke: still reply
                return self._not_done(Failure(), request)  # type: ignore[no-untyped-call]
        gathering: Deferred[Answer] = Deferred.fromCoroutine(answer)
        return gathering.addCallback(self._done, request, start).addErrback(self._not_done, request)

    def _done(self, answer: Answer, request: PolicyRequest, start: int) -> bytes:
        raw = request.raw
        shown = raw if self._redact is None else self._redact(raw)
        if answer.error is not None:
            self.errors += 1
            self._log.error("evaluation_failed", exc_info=answer.error, **_fields(shown))
        recorder = self.recorder
        if recorder is not None:
            live = recorder.live  # `Recorder.add`, inline: this runs once per request
            if live is not None:
                live.append((request.wire or request.raw, answer))
        self.answered += 1
        us = (time.perf_counter_ns() - start) // 1000
        self._decision(answer.rule, answer.text, answer.dry_run, us, shown)
        if answer.observed:
            self._observed(answer, request, shown)
        if not self.counting:
            return answer.wire
        # Counted inline, not through a method: this runs once per request.
        # The dicts hold every rule id of the config and every protocol state.
        stats = self.stats
        try:
            stats.decisions[answer.rule] += 1
        except KeyError:
            stats.decisions[answer.rule] = 1
        try:
            stats.requests[raw.get("protocol_state", "")] += 1
        except KeyError:
            stats.requests[OTHER_STATE] += 1
        stats.buckets[bisect_left(BOUNDS_US, us)] += 1
        stats.latency_us += us
        return answer.wire

    def _observed(self, answer: Answer, request: PolicyRequest, shown: Mapping[str, str]) -> None:
        """One event and one count per rule in observe mode that would have decided."""
        counts = self.stats.observed
        for decision in answer.observed:
            rule, action = decision.rule, decision.action
            counts[rule] = counts.get(rule, 0) + 1
            text = action.sent or action.render(request, rule, decision.values)
            self._log.info(
                "observed", rule=rule, action=text, answered_by=answer.rule, **_fields(shown)
            )

    def _not_done(self, failure: Failure, request: PolicyRequest) -> bytes:
        # A bug after the decision (log, recorder) or in gathering facts lands
        # here; the connection must still get its reply, or it would wait.
        self.errors += 1
        raw = request.raw
        shown = raw if self._redact is None else self._redact(raw)
        self._log.error("answer_failed", exc_info=failure.value, **_fields(shown))
        answer = failed(self.config, request, time.time(), cast("BaseException", failure.value))
        self.stats.count(answer.rule, raw.get("protocol_state", ""), 0)
        return answer.wire

    def _log_decision(
        self, rule: str, action: str, dry_run: bool, us: int, raw: Mapping[str, str]
    ) -> None:
        self._log.info("decision", rule=rule, action=action, dry_run=dry_run, us=us, **_fields(raw))


def _fields(raw: Mapping[str, str]) -> dict[str, str]:
    # Request values only ever appear as JSON values, never in the event name.
    return {name: raw.get(name, "") for name in DECISION_FIELDS}


@implementer(IPushProducer)
class PolicyProtocol(Protocol):
    """One Postfix connection: lock-step requests and replies.

    It is also the producer of its own replies: when the peer stops reading
    them and Twisted's send buffer passes its bound, the transport pauses us
    and we stop reading requests, so a peer that pipelines and never reads
    costs a bounded buffer, not memory without end. Postfix never pipelines.
    """

    def __init__(self, factory: PolicyFactory, peer: str) -> None:
        self._factory = factory
        self._decoder = Decoder(factory.answerer.config.daemon.limits)
        self._peer = peer
        self._timer: IDelayedCall | None = None
        self._closing = False
        self._send: Any = None
        # Replies not yet sent, in request order: bytes, or a slot that the
        # answer's Deferred fills. Empty whenever no answer waits for facts.
        self._waiting: deque[bytes | list[bytes]] = deque()
        self._asked = False
        self._paused = False
        self._warned = False

    def connectionMade(self) -> None:
        daemon = self._factory.answerer.config.daemon
        refused = credentials_refused(self.transport, daemon)
        if refused is not None:
            self._factory.answerer.stats.refused["credentials"] += 1
            log.warning("connection_refused", peer=self._peer, **refused)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._factory.connections.add(self)
        # Lock-step request/reply is the classic Nagle + delayed-ACK trap;
        # a reply is one small write, so send it at once.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._send = getattr(self.transport, "writeSomeData", None)
        register = getattr(self.transport, "registerProducer", None)
        if register is not None:
            register(self, True)  # noqa: FBT003 - streaming: Twisted pauses and resumes us
        self._timer = self._factory.reactor.callLater(
            daemon.first_request_timeout, self._never_asked
        )

    def dataReceived(self, data: bytes) -> None:
        if not self._asked:
            self._asked = True
            self._cancel_timer()
        try:
            requests = self._decoder.feed(data)
        except ProtocolError as exc:
            self._factory.answerer.stats.protocol_errors += 1
            log.warning("protocol_error", peer=self._peer, reason=str(exc))
            self._cancel_timer()
            self._close()
            return
        if len(requests) == 1 and not self._waiting:  # lock-step: Postfix's only way
            reply = self._factory.answerer.answer(requests[0])
            if isinstance(reply, bytes):
                self._reply(reply)
            else:
                self._hold([reply])
        elif requests:
            answer = self._factory.answerer.answer
            replies = [answer(request) for request in requests]
            if not self._waiting and all(reply.__class__ is bytes for reply in replies):
                self._reply(b"".join(cast("list[bytes]", replies)))
            else:
                self._hold(replies)
        self._watch_partial()

    def _hold(self, replies: list[bytes | Deferred[bytes]]) -> None:
        """Queue replies behind one still being gathered, so they leave in request order."""
        for reply in replies:
            if isinstance(reply, bytes):
                self._waiting.append(reply)
            else:
                slot: list[bytes] = []
                self._waiting.append(slot)
                reply.addCallbacks(self._filled, self._unfilled, (slot,), errbackArgs=(slot,))
        self._flush()

    def _filled(self, data: bytes, slot: list[bytes]) -> None:
        slot.append(data)
        self._flush()

    def _unfilled(self, failure: Failure, slot: list[bytes]) -> None:
        # Only if the answer's own fallback broke: say the safe thing, in order.
        log.error("answer_failed", peer=self._peer, error=repr(failure.value))
        self._filled(self._factory.answerer.config.daemon.on_error.wire or DUNNO.wire, slot)

    def _flush(self) -> None:
        ready = []
        waiting = self._waiting
        while waiting:
            head = waiting[0]
            if isinstance(head, list):
                if not head:
                    break
                head = head[0]
            ready.append(head)
            waiting.popleft()
        if ready:
            self._reply(b"".join(ready))
        if not waiting and self._closing and not self._decoder.pending:
            self._close()

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
            if self._closing and not self._waiting:
                self._close()
        elif self._timer is None:
            timeout = self._factory.answerer.config.daemon.request_timeout
            self._timer = self._factory.reactor.callLater(timeout, self._timed_out)

    def _never_asked(self) -> None:
        self._timer = None
        log.warning("connection_silent", peer=self._peer, reason="no request; slot freed")
        self._close()

    def pauseProducing(self) -> None:
        """The peer does not take its replies: stop reading its requests."""
        self._paused = True
        if not self._warned:
            self._warned = True
            log.warning("peer_not_reading", peer=self._peer, reason="replies not read; paused")
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        """The connection is gone; nothing of ours to stop."""

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
        transport: Any = self.transport
        if transport is None:
            return
        if self._paused:  # it reads nothing, so it would never let us finish writing
            transport.abortConnection()
            return
        # While we are its producer, Twisted resumes us instead of closing.
        unregister = getattr(transport, "unregisterProducer", None)
        if unregister is not None:
            unregister()
        transport.loseConnection()

    def close_when_idle(self) -> None:
        """Close after the requests received, if any, have been answered."""
        self._closing = True
        if self._paused or not (self._decoder.pending or self._waiting or self._unread()):
            self._close()

    def _unread(self) -> bool:
        """Whether a request already waits in the socket: read and answer it first."""
        handle = getattr(self.transport, "getHandle", None)
        sock = handle() if handle is not None else None
        if not isinstance(sock, socket.socket):
            return False
        try:
            return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

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
        peer = describe(addr)
        if not network_allowed(addr, daemon.allow):
            self.answerer.stats.refused["network"] += 1
            log.warning("connection_refused", peer=peer, reason="not in daemon.allow")
            return None
        if len(self.connections) >= daemon.max_connections:
            self.answerer.stats.refused["max_connections"] += 1
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


__all__ = ["Answerer", "PolicyFactory", "PolicyProtocol"]
