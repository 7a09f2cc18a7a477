"""The Twisted protocol layer, driven through in-memory transports (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.main import CONNECTION_LOST
from twisted.internet.testing import MemoryReactorClock, StringTransport

from postgate.config.load import Config, DaemonConfig, _network_set
from postgate.daemon.server import Answerer, PolicyFactory, PolicyProtocol
from postgate.replies.model import DUNNO, Action
from postgate.replies.parsing import parse_action
from postgate.wire.codec import encode_request


@dataclass(frozen=True)
class FakeDecision:
    action: Action
    rule: str
    trace: tuple[str, ...] = ()
    effects: tuple[object, ...] = ()
    observed: tuple[object, ...] = ()


class EchoRules:
    """Answers `REJECT <recipient>`, or raises when the recipient says so."""

    rule_count = 1
    digest = "fake"
    needs_facts = False
    nodes = ()
    default = parse_action("DUNNO").action

    def program(self, raw: dict[str, str]) -> FakeDecision:
        recipient = raw.get("recipient", "")
        if recipient == "boom":
            raise RuntimeError("rule bug")
        return FakeDecision(parse_action(f"REJECT {recipient}").action, "ECHO")


def make_factory(**daemon: object) -> tuple[PolicyFactory, MemoryReactorClock]:
    config = Config(Path("test.toml"), replace(DaemonConfig(), **daemon), EchoRules())  # type: ignore[arg-type]
    reactor = MemoryReactorClock()
    return PolicyFactory(Answerer(config), reactor), reactor


def connect(
    factory: PolicyFactory, host: str = "127.0.0.1"
) -> tuple[PolicyProtocol, StringTransport]:
    proto = factory.buildProtocol(IPv4Address("TCP", host, 5555))
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def req(recipient: str) -> bytes:
    return encode_request(
        {"request": "smtpd_access_policy", "protocol_state": "RCPT", "recipient": recipient}
    )


class TestReplies:
    def test_requests_in_one_chunk_get_replies_in_order(self) -> None:
        """Two requests arriving together are answered in the order they came."""
        factory, _ = make_factory()
        proto, transport = connect(factory)
        proto.dataReceived(req("a@x") + req("b@x"))
        assert b"action=REJECT a@x\n\naction=REJECT b@x\n\n" == transport.value()

    def test_request_split_byte_by_byte_gets_one_reply(self) -> None:
        """A request delivered one byte at a time is answered once, when complete."""
        factory, _ = make_factory()
        proto, transport = connect(factory)
        for byte in req("c@x"):
            proto.dataReceived(bytes([byte]))
        assert b"action=REJECT c@x\n\n" == transport.value()

    def test_rule_error_gets_on_error_answer_and_a_log_event(self) -> None:
        """An exception inside evaluation answers `on_error` and logs the traceback."""
        factory, _ = make_factory(on_error=parse_action("DEFER 4.3.0 try later").action)
        proto, transport = connect(factory)
        with capture_logs() as logs:
            proto.dataReceived(req("boom"))
        assert b"action=DEFER 4.3.0 try later\n\n" == transport.value()
        assert ["evaluation_failed", "decision"] == [e["event"] for e in logs]
        assert "ON_ERROR" == logs[1]["rule"]

    def test_dry_run_answers_dunno_but_logs_the_verdict(self) -> None:
        """In dry-run mode Postfix gets DUNNO while the log keeps the real verdict."""
        factory, _ = make_factory(dry_run=True)
        proto, transport = connect(factory)
        with capture_logs() as logs:
            proto.dataReceived(req("d@x"))
        assert DUNNO.wire == transport.value()
        assert ("REJECT d@x", True) == (logs[0]["action"], logs[0]["dry_run"])

    def test_decision_event_keeps_request_values_as_values(self) -> None:
        """A recipient with a newline stays one value of one event."""
        factory, _ = make_factory()
        proto, _ = connect(factory)
        with capture_logs() as logs:
            proto.dataReceived(req("evil\rline"))
        assert ("decision", {"evil\rline"}) == (logs[-1]["event"], {e["recipient"] for e in logs})


class ShortSendTransport(StringTransport):
    """Takes at most ``room`` bytes per direct send, like a full socket buffer."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.direct = b""
        self.connected = True

    def writeSomeData(self, data: bytes) -> int:
        taken = data[: self.room]
        self.direct += taken
        return len(taken)


class LostTransport(StringTransport):
    """Reports the connection lost on a direct send, as Twisted does."""

    connected = True

    def writeSomeData(self, data: bytes) -> Exception:
        return CONNECTION_LOST


class TestDirectSend:
    def test_short_send_leaves_the_rest_and_later_replies_in_order(self) -> None:
        """After a partial direct send, the rest and every later reply go through Twisted."""
        factory, _ = make_factory()
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        assert proto is not None
        transport = ShortSendTransport(room=5)
        proto.makeConnection(transport)
        proto.dataReceived(req("a@x"))
        proto.dataReceived(req("b@x"))
        sent = transport.direct + transport.value()
        assert b"action=REJECT a@x\n\naction=REJECT b@x\n\n" == sent
        assert b"actio" == transport.direct

    def test_whole_direct_send_bypasses_twisted_buffer(self) -> None:
        """When the socket takes the whole reply, nothing is left for Twisted to write."""
        factory, _ = make_factory()
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        assert proto is not None
        transport = ShortSendTransport(room=1 << 16)
        proto.makeConnection(transport)
        proto.dataReceived(req("c@x"))
        assert (b"action=REJECT c@x\n\n", b"") == (transport.direct, transport.value())

    def test_lost_connection_on_direct_send_falls_back_to_twisted(self) -> None:
        """A direct send that reports the connection lost hands the reply to Twisted."""
        factory, _ = make_factory()
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        assert proto is not None
        transport = LostTransport()
        proto.makeConnection(transport)
        proto.dataReceived(req("d@x"))
        assert b"action=REJECT d@x\n\n" == transport.value()


class TestBadInput:
    def test_protocol_error_closes_without_reply(self) -> None:
        """Garbage gets one log event and a close, never a reply."""
        factory, _ = make_factory()
        proto, transport = connect(factory)
        with capture_logs() as logs:
            proto.dataReceived(b"no equals sign\n\n")
        assert (b"", True) == (transport.value(), transport.disconnecting)
        assert ["protocol_error"] == [e["event"] for e in logs]

    def test_incomplete_request_times_out(self) -> None:
        """A request left half-sent past request_timeout closes the connection."""
        factory, clock = make_factory(request_timeout=5.0)
        proto, transport = connect(factory)
        proto.dataReceived(req("e@x")[:10])
        clock.advance(4.9)
        assert not transport.disconnecting
        clock.advance(0.2)
        assert transport.disconnecting

    def test_idle_connection_is_never_closed(self) -> None:
        """No partial request, no timer: an idle connection stays open.

        docs/protocol.md, Connections: Postfix drops a connection that turns readable.
        """
        factory, clock = make_factory(request_timeout=5.0)
        proto, transport = connect(factory)
        proto.dataReceived(req("f@x"))
        clock.advance(100_000)
        assert (False, []) == (transport.disconnecting, clock.getDelayedCalls())


class TestAccess:
    @pytest.mark.parametrize(
        ("addr", "allowed"),
        [
            (IPv4Address("TCP", "127.0.0.1", 1), True),
            (IPv4Address("TCP", "192.0.2.1", 1), False),
            (IPv6Address("TCP", "::1", 1), True),
            (IPv6Address("TCP", "::ffff:127.0.0.2", 1), True),
            (IPv6Address("TCP", "2001:db8::1", 1), False),
            (UNIXAddress(b"/run/postgate.sock"), True),
        ],
    )
    def test_allow_list_decides_who_may_connect(self, addr: object, allowed: bool) -> None:
        """TCP peers must be in daemon.allow (IPv4-mapped as IPv4); UNIX peers always pass."""
        factory, _ = make_factory()
        with capture_logs():
            proto = factory.buildProtocol(addr)  # type: ignore[arg-type]
        assert allowed == (proto is not None)

    def test_connection_limit_refuses_extra_peers(self) -> None:
        """Past max_connections a new peer is refused with a log event."""
        factory, _ = make_factory(max_connections=1)
        connect(factory)
        with capture_logs() as logs:
            extra = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
        assert (None, "daemon.max_connections reached") == (extra, logs[0]["reason"])

    def test_allow_list_accepts_networks(self) -> None:
        """A configured network admits its members."""
        factory, _ = make_factory(allow=_network_set(("192.0.2.0/24",)))
        assert factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", 1)) is not None


class TestDrain:
    def test_drain_waits_for_the_request_in_progress(self) -> None:
        """Shutdown answers a half-received request before closing its connection."""
        factory, _ = make_factory()
        idle, idle_transport = connect(factory)
        busy, busy_transport = connect(factory)
        busy.dataReceived(req("g@x")[:7])
        done = factory.drain()
        assert (True, False) == (idle_transport.disconnecting, busy_transport.disconnecting)
        idle.connectionLost()
        busy.dataReceived(req("g@x")[7:])
        assert b"action=REJECT g@x\n\n" == busy_transport.value()
        assert busy_transport.disconnecting
        busy.connectionLost()
        fired: list[object] = []
        done.addCallback(fired.append)
        assert [None] == fired
