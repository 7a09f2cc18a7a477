"""The sd_notify client against a real datagram socket standing in for systemd.

A local AF_UNIX datagram socket in ``tmp_path`` plays the service manager:
sends to it are queued synchronously, so every receive below is non-blocking
and nothing waits on time.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from postgate.daemon.systemd import (
    MAX_STATUS,
    Notifier,
    listen_service,
    monotonic_usec,
    one_line,
    socket_address,
    watchdog_interval,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class FakeManager:
    """The receiving end of ``$NOTIFY_SOCKET``: one bound datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0)

    def messages(self) -> list[str]:
        """Every datagram queued so far, oldest first."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[FakeManager, str]]:
    path = str(tmp_path / "notify")
    fake = FakeManager(path)
    yield fake, path
    fake.close()


def notifier_for(path: str, **extra: str) -> Notifier:
    return Notifier.from_environ({"NOTIFY_SOCKET": path, **extra})


def fixed_clock() -> int:
    return 123456789


class TestSocketAddress:
    def test_absolute_path_is_used_as_is(self) -> None:
        expected = "/run/systemd/notify"
        assert expected == socket_address("/run/systemd/notify")

    def test_at_sign_means_abstract_namespace(self) -> None:
        """sd_notify(3): a leading @ is the abstract namespace, a leading NUL for the kernel."""
        expected = b"\0org/systemd/notify"
        assert expected == socket_address("@org/systemd/notify")

    def test_lone_at_sign_is_refused(self) -> None:
        """An abstract name needs at least one character after the @."""
        assert socket_address("@") is None

    @pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/notify"])
    def test_other_forms_are_refused(self, value: str) -> None:
        """Empty, relative and vsock addresses give no address to send to."""
        assert socket_address(value) is None


class TestWatchdogInterval:
    def test_half_of_watchdog_usec(self) -> None:
        """Pings go out at half the timeout, as sd_watchdog_enabled(3) recommends."""
        expected = 15.0
        assert expected == watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=42)

    def test_matching_pid_arms_the_watchdog(self) -> None:
        """WATCHDOG_PID naming this process keeps the watchdog armed."""
        env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}
        expected = 1.0
        assert expected == watchdog_interval(env, pid=42)

    def test_other_pid_disarms_the_watchdog(self) -> None:
        """A process that merely inherited the variables must not ping."""
        env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "41"}
        assert watchdog_interval(env, pid=42) is None

    @pytest.mark.parametrize("usec", ["", "0", "-5", "30s", "1e6", " 30"])
    def test_missing_zero_or_garbage_disarms_the_watchdog(self, usec: str) -> None:
        """Anything but a positive decimal count of microseconds means no watchdog."""
        assert watchdog_interval({"WATCHDOG_USEC": usec}, pid=42) is None

    def test_unset_means_no_watchdog(self) -> None:
        """Without WatchdogSec= there is nothing to ping."""
        assert watchdog_interval({}, pid=42) is None


class TestOneLine:
    def test_newlines_cannot_start_another_field(self) -> None:
        """A status text with a newline cannot smuggle in READY=1 or similar."""
        expected = "a READY=1 b"
        assert expected == one_line("a\nREADY=1\r\n b")

    def test_long_text_is_cut(self) -> None:
        """The status line is bounded so the datagram stays small."""
        expected = MAX_STATUS
        assert expected == len(one_line("x" * 1000))


class TestMessages:
    def test_ready_carries_status(self, manager: tuple[FakeManager, str]) -> None:
        """READY=1 and the status line travel in one datagram."""
        fake, path = manager
        notifier_for(path).ready("3 rules loaded")
        expected = ["READY=1\nSTATUS=3 rules loaded"]
        assert expected == fake.messages()

    def test_reloading_carries_monotonic_usec(self, manager: tuple[FakeManager, str]) -> None:
        """RELOADING=1 comes with MONOTONIC_USEC, which Type=notify-reload requires."""
        fake, path = manager
        Notifier(path, clock=fixed_clock).reloading()
        expected = ["RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reloading configuration"]
        assert expected == fake.messages()

    def test_stopping(self, manager: tuple[FakeManager, str]) -> None:
        """STOPPING=1 tells systemd the shutdown is ours, not a crash."""
        fake, path = manager
        notifier_for(path).stopping()
        expected = ["STOPPING=1\nSTATUS=stopping"]
        assert expected == fake.messages()

    def test_status_is_flattened(self, manager: tuple[FakeManager, str]) -> None:
        """A multi-line status arrives as one STATUS= line."""
        fake, path = manager
        notifier_for(path).status("12 answered\n2 connections")
        expected = ["STATUS=12 answered 2 connections"]
        assert expected == fake.messages()

    def test_ping_is_watchdog_1(self, manager: tuple[FakeManager, str]) -> None:
        fake, path = manager
        notifier_for(path).ping()
        expected = ["WATCHDOG=1"]
        assert expected == fake.messages()

    def test_one_datagram_per_message_in_order(self, manager: tuple[FakeManager, str]) -> None:
        """A reload cycle arrives as separate datagrams in the order they were sent."""
        fake, path = manager
        notifier = Notifier(path, clock=fixed_clock)
        notifier.ready("a")
        notifier.reloading()
        notifier.ready("b")
        notifier.stopping()
        heads = [m.split("\n", 1)[0] for m in fake.messages()]
        expected = ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
        assert expected == heads

    def test_default_clock_is_clock_monotonic(self, manager: tuple[FakeManager, str]) -> None:
        """MONOTONIC_USEC is read from CLOCK_MONOTONIC at the moment of the reload."""
        fake, path = manager
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier_for(path).reloading()
        after = monotonic_usec()
        stamp = int(fake.messages()[0].split("\n")[1].removeprefix("MONOTONIC_USEC="))
        expected = (True, True)
        assert expected == (before <= stamp, stamp <= after)


class TestAbstractNamespace:
    def test_messages_reach_an_abstract_socket(self) -> None:
        """systemd in containers often hands out @-addresses; they must work too."""
        name = f"@postgate-test-{os.getpid()}-{id(self)}"
        fake = FakeManager(b"\0" + name[1:].encode())
        try:
            notifier_for(name).ready("abstract")
            expected = ["READY=1\nSTATUS=abstract"]
            assert expected == fake.messages()
        finally:
            fake.close()


class TestOutsideSystemd:
    def test_without_notify_socket_nothing_is_enabled(self) -> None:
        """Run by hand, the notifier is inert."""
        assert Notifier.from_environ({}).enabled is False

    def test_without_notify_socket_every_call_is_harmless(self) -> None:
        notifier = Notifier.from_environ({})
        with capture_logs() as logs:
            notifier.ready("x")
            notifier.reloading()
            notifier.status("x")
            notifier.ping()
            notifier.stopping()
        assert logs == []

    def test_without_notify_socket_no_watchdog_timer(self) -> None:
        """Pings nobody hears would only cost wake-ups, so no interval is given."""
        notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval() is None

    def test_from_environ_arms_watchdog_for_this_process(self, tmp_path: Path) -> None:
        """WATCHDOG_PID equal to our own pid gives the half-interval."""
        env = {
            "NOTIFY_SOCKET": str(tmp_path / "n"),
            "WATCHDOG_USEC": "3000000",
            "WATCHDOG_PID": str(os.getpid()),
        }
        expected = 1.5
        assert expected == Notifier.from_environ(env).watchdog_interval()

    def test_unsupported_address_is_logged_and_disabled(self) -> None:
        """A vsock: address cannot be reached under our RestrictAddressFamilies=."""
        with capture_logs() as logs:
            notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:9"})
        events = [(e["event"], e["notify_socket"]) for e in logs]
        expected = (False, [("systemd_notify_unsupported", "vsock:2:9")])
        assert expected == (notifier.enabled, events)


class TestSendErrors:
    def test_missing_socket_does_not_raise_and_logs_once(self, tmp_path: Path) -> None:
        """systemd gone (or a stale variable) never stops the daemon, and is said once."""
        notifier = notifier_for(str(tmp_path / "absent"))
        with capture_logs() as logs:
            notifier.ready("x")
            notifier.ping()
            notifier.stopping()
        expected = ["systemd_notify_failed"]
        assert expected == [e["event"] for e in logs]

    def test_full_queue_drops_instead_of_blocking(self, manager: tuple[FakeManager, str]) -> None:
        """A manager that does not read cannot stall the reactor: extra pings are dropped."""
        fake, path = manager
        notifier = notifier_for(path)
        sends = 5000
        with capture_logs() as logs:
            for _ in range(sends):
                notifier.ping()
        received = len(fake.messages())
        expected = (True, ["systemd_notify_failed"])
        assert expected == (0 < received < sends, [e["event"] for e in logs])

    def test_close_then_send_reopens(self, manager: tuple[FakeManager, str]) -> None:
        """close() releases the socket; a later message opens a fresh one."""
        fake, path = manager
        notifier = notifier_for(path)
        notifier.ping()
        notifier.close()
        notifier.ping()
        expected = ["WATCHDOG=1", "WATCHDOG=1"]
        assert expected == fake.messages()


class TestListenService:
    def test_missing_systemd_name_is_explained(self) -> None:
        """A name systemd did not pass gives a sentence pointing at the socket unit."""
        factory = Factory.forProtocol(Protocol)
        with pytest.raises(ValueError, match=r"no socket named 'nope'.*\.socket unit active"):
            listen_service("systemd:domain=UNIX:name=nope", factory, MemoryReactor())

    def test_ordinary_endpoint_listens_like_strports(self) -> None:
        """A tcp: entry binds through the reactor when the service starts."""
        reactor = MemoryReactor()
        service = listen_service("tcp:10040:interface=127.0.0.1", Factory(), reactor)
        service.startService()
        expected = [(10040, "127.0.0.1")]
        assert expected == [(port, interface) for port, _, _, interface in reactor.tcpServers]

    def test_listen_failure_raises_at_start(self) -> None:
        """Like strports.service, a listener that cannot bind fails startService itself."""
        service = listen_service("tcp:10040", Factory(), FailingReactor())
        with pytest.raises(OSError, match="address in use"):
            service.startService()


class FailingReactor(MemoryReactor):
    """A reactor on which every port is already taken."""

    def listenTCP(self, *_args: object, **_kwargs: object) -> object:
        raise OSError("address in use")
